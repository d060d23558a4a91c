"""The soak's CI-sized runs (a few simulated minutes; the hour is tests/test_soak.py, marked slow): every
note_on closed, every message in range, the recording complete, switches at random moments answered by
rollbacks, the cache re-anchored, no error; and the checker itself catches what it must.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mido
import pytest

from streamer.soak import NoteLedger, SoakConfig, midi_file_problems, run_soak

BIN = Path(sys.executable).parent / "moodstream"

FAULTY_CLI = """
import sys
from model.engine import Decoder
real = Decoder.decode_one
calls = [0]
def decode_one(self, token_id, guidance_w=1.0, negative=None):
    calls[0] += 1
    if calls[0] % int(sys.argv[1]) == 0:
        raise RuntimeError("injected fault")
    return real(self, token_id, guidance_w, negative)
Decoder.decode_one = decode_one
from streamer.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from streamer.engine import load_model

    torch.set_num_threads(1)
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


def test_a_few_simulated_minutes_with_random_switches_keep_every_promise(tiny, tmp_path):
    model, vocab = tiny
    take = tmp_path / "soak.mid"
    report = run_soak(model, vocab, SoakConfig(hours=0.06, seed=3, switch_every_s=6.0, record=take))
    assert report.ok, report.problems
    assert report.simulated_s >= 0.06 * 3600
    assert report.stuck_notes == 0 and report.violations == 0 and report.error_logs == 0
    assert report.note_ons > 500 and report.note_offs >= report.note_ons
    assert report.switches >= 10 and report.rollbacks >= 5  # switches landed while bars were being written
    assert report.reanchors >= 10 and report.underruns == 0 and report.generator_failures == 0
    assert report.recorded_note_ons == report.note_ons  # the recording holds every note played
    assert midi_file_problems(take) == (report.note_ons, [])
    assert report.longest_note_beats <= SoakConfig().bar.max_note_beats
    assert not list(tmp_path.glob(".*.part"))


def test_the_ledger_catches_stuck_held_retriggered_and_out_of_range_notes():
    ledger = NoteLedger(max_note_beats=8.0)

    def send(kind, beat, **values):
        ledger.send(SimpleNamespace(type=kind, time=beat, **values))

    send("note_on", 0.0, channel=0, note=60, velocity=90)
    send("note_on", 1.0, channel=0, note=60, velocity=90)  # retriggered without a note_off
    send("note_off", 10.0, channel=0, note=60, velocity=0)  # held 9 beats
    send("note_on", 10.0, channel=16, note=61, velocity=90)  # channel out of range, never closed
    send("note_off", 9.0, channel=1, note=1, velocity=0)  # time goes back
    text = "\n".join(ledger.problems)
    assert "on a sounding key" in text and "held 9.000 beats" in text and "channel 16 outside 0..15" in text
    assert "time went back" in text
    assert ledger.stuck() == [(16, 61)] and ledger.violations == 4


def test_a_recording_with_a_note_left_open_is_caught(tmp_path):
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=80), mido.Message("note_on", note=62, velocity=80),
                            mido.Message("note_off", note=60, time=480)])
    midi = mido.MidiFile(type=0)
    midi.tracks.append(track)
    midi.save(str(tmp_path / "open.mid"))
    count, problems = midi_file_problems(tmp_path / "open.mid")
    assert count == 2 and problems and "1 note(s) never closed: [(0, 62)]" in problems[0]


def test_the_soak_cli_reports_json_and_fails_loudly(tiny_model_dir, tmp_path):
    take = tmp_path / "take.mid"
    out = subprocess.run([str(BIN), "stream", "--soak-hours", "0.02", "--model", str(tiny_model_dir), "--seed", "1",
                          "--record", str(take), "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["problems"] == [] and report["stuck_notes"] == 0 and report["switches"] >= 2
    assert report["recorded_note_ons"] == report["note_ons"] > 0
    assert "soak (simulated)" in out.stderr and "Traceback" not in out.stderr  # a progress bar on stderr
    assert midi_file_problems(take) == (report["note_ons"], [])
    # a generator that keeps failing: the soak says so in one line and exits 1
    failing = subprocess.run([sys.executable, "-c", FAULTY_CLI, "150", "stream", "--soak-hours", "0.02", "--model",
                              str(tiny_model_dir)], capture_output=True, text=True, timeout=600)
    assert failing.returncode == 1, failing.stderr
    errors = [line for line in failing.stderr.splitlines() if line.startswith("moodstream: error:")]
    assert len(errors) == 1 and "soak failed: " in errors[0] and "injected fault" in errors[0], failing.stderr
    assert "Traceback" not in failing.stderr
