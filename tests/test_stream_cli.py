"""`moodstream stream` as users run it: bars, recording, signals, output errors, a JACK port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import mido
import pytest
from jack_fixture import jack_server  # noqa: F401

BIN = Path(sys.executable).parent / "moodstream"


def stream(*args, timeout=300):
    return subprocess.run([str(BIN), "stream", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return str(tiny_model_dir)


def closed_notes(path: Path) -> tuple[int, bool]:
    """How many note_ons the file holds, and whether each has its note_off."""
    balance, count = Counter(), 0
    for msg in mido.MidiFile(str(path)).tracks[0]:
        if msg.type == "note_on" and msg.velocity:
            balance[(msg.channel, msg.note)] += 1
            count += 1
        elif msg.type in ("note_on", "note_off"):
            balance[(msg.channel, msg.note)] = 0
    return count, not any(balance.values())


def test_bars_then_exit_with_a_complete_recording(model, tmp_path):
    take = tmp_path / "take.mid"
    out = stream("--model", model, "--output", "null", "--bars", "3", "--bpm", "300", "--record", str(take))
    assert out.returncode == 0, out.stderr
    count, closed = closed_notes(take)
    assert count > 5 and closed
    assert f"recorded {take}" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_the_recording_is_complete(model, tmp_path, sig):
    take = tmp_path / "take.mid"
    proc = subprocess.Popen([str(BIN), "-v", "stream", "--model", model, "--output", "null", "--bpm",
                             "300", "--record", str(take)], stderr=subprocess.PIPE, text=True)
    seen = []
    bars = threading.Event()

    def read():
        buffer = ""
        while True:
            chunk = proc.stderr.read(1)
            if not chunk:
                return
            buffer += chunk
            seen.append(chunk)
            if re.search(r"bar [2-9]\d* · any · any · 300 bpm", buffer):
                bars.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert bars.wait(120), "".join(seen)[-500:]  # two bars have started
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    reader.join(5)
    text = "".join(seen)
    assert "stopping (all notes off)" in text and "Traceback" not in text
    count, closed = closed_notes(take)
    assert count > 0 and closed
    assert not list(tmp_path.glob(".*.part"))


def test_unknown_genre_is_one_line(model):
    out = stream("--model", model, "--output", "null", "--genre", "polka")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "unknown genre 'polka'; valid genres: any, pop, rock" in out.stderr


def test_missing_model_is_one_line(tmp_path):
    out = stream("--model", str(tmp_path / "nowhere"), "--output", "null")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "model not found" in out.stderr


def test_fluidsynth_without_an_audio_device_is_one_line(model):
    out = stream("--model", model, "--output", "fluidsynth", "--bars", "1", "--bpm", "300")
    if out.returncode == 0:  # this machine has sound
        return
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "FluidSynth could not open an audio device (tried pipewire" in out.stderr


def test_a_port_that_cannot_open_leaves_the_other_outputs(model, tmp_path, monkeypatch):
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer: the port opens")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"moodstream-none-{os.getpid()}")
    take = tmp_path / "take.mid"
    out = stream("--model", model, "--output", "port,null", "--bars", "2", "--bpm", "300", "--record", str(take))
    assert out.returncode == 0, out.stderr
    assert "warning: cannot open MIDI virtual port (tried ALSA" in out.stderr
    assert "going on with the other outputs" in out.stderr
    assert closed_notes(take)[0] > 0
    alone = stream("--model", model, "--output", "port", "--bars", "2")
    assert alone.returncode == 1 and alone.stderr.count("\n") == 1 and "JACK" in alone.stderr


@pytest.mark.jack
def test_stream_to_a_jack_port_a_daw_reads(model, jack_server):
    import rtmidi

    proc = subprocess.Popen([str(BIN), "stream", "--model", model, "--output", "port", "--bars", "3",
                             "--bpm", "300"], stderr=subprocess.PIPE, text=True)
    daw = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="daw", queue_size_limit=1 << 16)
    daw.ignore_types(timing=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("moodstream" in p for p in daw.get_ports()):
        time.sleep(0.05)
    ports = daw.get_ports()
    daw.open_port([i for i, p in enumerate(ports) if "moodstream" in p][0])
    received = []
    while True:  # read until the stream has ended and nothing is left (every message, none skipped)
        running = proc.poll() is None
        event = daw.get_message()
        if event:
            received.append(event[0])
        elif not running:
            break
        else:
            time.sleep(0.001)
    assert proc.returncode == 0, proc.stderr.read()
    kinds = Counter(m[0] & 0xF0 if m[0] < 0xF0 else m[0] for m in received)
    assert kinds[0x90] > 5 and kinds[0xF8] > 24 and kinds[0xFC] == 1  # notes, clock, Stop at the end
