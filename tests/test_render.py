"""`moodstream render` as users run it: .mid and .wav, deterministic for a seed, switches, bad flags."""

from __future__ import annotations

import subprocess
import sys
import wave
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

BIN = Path(sys.executable).parent / "moodstream"


def render(*args):
    return subprocess.run([str(BIN), "render", *args], capture_output=True, text=True, timeout=300)


def notes_of(path: Path):
    """(beat, type, channel, note) of every note message, and whether every note_on was closed."""
    midi = mido.MidiFile(str(path))
    ticks, rows, open_notes = 0, [], Counter()
    for msg in midi.tracks[0]:
        ticks += msg.time
        if msg.type in ("note_on", "note_off"):
            rows.append((ticks / midi.ticks_per_beat, msg.type, msg.channel, msg.note))
            open_notes[(msg.channel, msg.note)] += 1 if msg.type == "note_on" and msg.velocity else -1
    return rows, all(v <= 0 for v in open_notes.values())


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return str(tiny_model_dir)


def test_same_seed_same_file_other_seed_other_music(model, tmp_path):
    args = ["--model", model, "--bars", "6", "--genre", "rock", "--switch", "3:jazz:calm"]
    a, b, c = tmp_path / "a.mid", tmp_path / "b.mid", tmp_path / "c.mid"
    for path, seed in ((a, "5"), (b, "5"), (c, "6")):
        out = render(*args, "--seed", seed, "-o", str(path))
        assert out.returncode == 0, out.stderr
    assert a.read_bytes() == b.read_bytes()
    assert notes_of(a)[0] != notes_of(c)[0]
    rows, closed = notes_of(a)
    assert closed and sum(1 for r in rows if r[1] == "note_on") > 20
    assert not list(tmp_path.glob(".*.part"))


def test_render_wav_has_sound(model, tmp_path):
    out_path = tmp_path / "take.wav"
    out = render("--model", model, "--bars", "2", "--bpm", "120", "--seed", "1", "-o", str(out_path))
    assert out.returncode == 0, out.stderr
    with wave.open(str(out_path)) as w:
        seconds = w.getnframes() / w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    # two bars at 120 bpm (2-6 beats each) from the first note, then a 2 s tail
    assert 2 + 1.0 <= seconds <= 2 + 6.0
    assert np.sqrt((audio.astype(np.float64) ** 2).mean()) > 100


def test_bpm_sets_the_tempo_of_the_file(model, tmp_path):
    path = tmp_path / "slow.mid"
    out = render("--model", model, "--bars", "2", "--bpm", "72", "-o", str(path))
    assert out.returncode == 0, out.stderr
    tempos = {m.tempo for m in mido.MidiFile(str(path)).tracks[0] if m.type == "set_tempo"}
    assert tempos == {mido.bpm2tempo(72)}


@pytest.mark.parametrize("args, message", [
    (["--genre", "polka"], "unknown genre 'polka'; valid genres: any, pop, rock"),
    (["--switch", "2:jazz:grumpy"], "unknown mood 'grumpy'; valid moods: any, happy, tense, sad, calm"),
    (["--switch", "9:jazz:calm"], "bar 9 must be from 1 to 3"),
    (["--switch", "jazz"], "write BAR:GENRE:MOOD"),
    (["--bpm", "5"], "bpm = 5.0 is out of range: use a number from 20 to 300"),
    (["--temperature", "3"], "temperature = 3.0 is out of range"),
    (["--top-p", "0"], "top_p = 0.0 is out of range"),
    (["--guidance", "-1"], "guidance = -1.0 is out of range"),
])
def test_bad_flags_are_one_line(model, tmp_path, args, message):
    out = render("--model", model, "--bars", "4", *args, "-o", str(tmp_path / "x.mid"))
    assert out.returncode == 1
    assert message in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "x.mid").exists()


def test_output_must_be_mid_or_wav(model, tmp_path):
    out = render("--model", model, "--bars", "2", "-o", str(tmp_path / "x.mp3"))
    assert out.returncode == 1 and "name a .mid or .wav file" in out.stderr
