"""SIGINT and SIGTERM during `stream`, `play`, `render`, `dataset build` and `train`, as real subprocesses:
every note closed, ports gone, the recording and every output file whole (temporary name, then renamed),
and the next run of a long job resumes where the first stopped. Waits are bounded polls for an event
(a line on stderr, a file appearing), never timed assertions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import mido
import psutil
import pytest
from jack_fixture import jack_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "moodstream"
TINY_TRAIN = REPO / "training" / "configs" / "tiny.toml"
WAIT_S = 120.0
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return str(tiny_model_dir)


class Child:
    """A `moodstream` subprocess whose stderr is read on a thread, so a test can wait for a line."""

    def __init__(self, args, **kwargs):
        self.proc = subprocess.Popen([str(BIN), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, **kwargs)
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            chunk = self.proc.stderr.read(1)
            if not chunk:
                return
            with self._changed:
                self.err.append(chunk)
                self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self.err)

    def wait_for(self, pattern: str, timeout_s: float = WAIT_S) -> re.Match:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = re.search(pattern, "".join(self.err))
                if found:
                    return found
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"no {pattern!r} on stderr (exit {self.proc.poll()}):\n{''.join(self.err)[-2000:]}")
                self._changed.wait(0.1)

    def finish(self, timeout_s: float = WAIT_S) -> tuple[int, str, str]:
        out = self.proc.stdout.read()  # stderr is the reader thread's (communicate() would take some of it)
        self.proc.wait(timeout_s)
        self._reader.join(timeout_s)
        return self.proc.returncode, out, self.stderr


def note_balance(path: Path) -> tuple[int, set]:
    """(note_ons, keys left sounding) of a MIDI file."""
    sounding, count = set(), 0
    for msg in mido.MidiFile(str(path)).tracks[0]:
        if msg.type == "note_on" and msg.velocity:
            sounding.add((msg.channel, msg.note))
            count += 1
        elif msg.type in ("note_on", "note_off"):
            sounding.discard((msg.channel, msg.note))
    return count, sounding


def no_partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or ".tmp" in p.suffixes]


# ---- stream -------------------------------------------------------------------------------------------
@pytest.mark.jack
@pytest.mark.parametrize("sig", SIGNALS)
def test_stream_to_a_jack_port_stops_cleanly_on_a_signal(model, jack_server, tmp_path, sig):
    """The DAW side sees every note closed, then CC123 on all 16 channels and Stop; the port disappears;
    the recording is complete."""
    import rtmidi

    take = tmp_path / "take.mid"
    child = Child(["-v", "stream", "--model", model, "--output", "port,null", "--bpm", "240",
                   "--record", take])
    daw = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="daw", queue_size_limit=1 << 16)
    daw.ignore_types(timing=False)
    deadline = time.monotonic() + WAIT_S
    while not any("moodstream" in p for p in daw.get_ports()):
        assert time.monotonic() < deadline and child.proc.poll() is None, child.stderr
        time.sleep(0.05)
    daw.open_port([i for i, p in enumerate(daw.get_ports()) if "moodstream" in p][0])
    received: list[list[int]] = []
    stop_reading = threading.Event()

    def read():
        while not stop_reading.is_set():
            event = daw.get_message()
            if event:
                received.append(event[0])
            else:
                time.sleep(0.001)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    child.wait_for(r"bar 3 · any · any · 240 bpm")
    child.proc.send_signal(sig)
    code, _, err = child.finish()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not received or received[-1] != [0xFC]):
        time.sleep(0.02)  # the last messages may still be on their way through JACK
    stop_reading.set()
    reader.join(2)
    assert code == 0, err
    assert "stopping (all notes off)" in err and "Traceback" not in err
    sounding = set()
    for message in received:
        status = message[0] & 0xF0
        if status == 0x90 and message[2] > 0:
            sounding.add((message[0] & 0x0F, message[1]))
        elif status in (0x80, 0x90):
            sounding.discard((message[0] & 0x0F, message[1]))
    notes_on = sum(1 for m in received if m[0] & 0xF0 == 0x90 and m[2] > 0)
    assert notes_on > 0 and sounding == set()  # every note the DAW heard was closed
    all_notes_off = {m[0] & 0x0F for m in received if m[0] & 0xF0 == 0xB0 and m[1] == 123}
    assert all_notes_off == set(range(16)) and received[-1] == [0xFC]  # CC123 everywhere, then Stop
    assert not any("moodstream" in p for p in daw.get_ports())  # the port is closed
    daw.close_port()
    count, left = note_balance(take)
    assert count > 0 and not left
    assert not no_partial_files(tmp_path)


# ---- play -----------------------------------------------------------------------------------------------
def tmux(socket: str, *args: str) -> str:
    out = subprocess.run(["tmux", "-u", "-L", socket, *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def wait_for_screen(socket: str, predicate, what: str) -> list[str]:
    deadline = time.monotonic() + WAIT_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = tmux(socket, "capture-pane", "-p", "-t", "play").splitlines()
        if predicate(lines):
            return lines
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; the screen shows:\n" + "\n".join(lines))


@pytest.mark.parametrize("how", ["ctrl+c", "SIGINT", "SIGTERM"])
def test_play_quits_cleanly_on_ctrl_c_and_signals(model, tmp_path, how):
    """Ctrl+C typed in the terminal (Textual would only show a hint), or a signal from outside: all notes
    off, the recording written whole, exit 0, no traceback."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux not found: install it with scripts/setup-system.sh")
    socket = f"moodstream-rel-{os.getpid()}-{how}"
    take = tmp_path / "take.mid"
    command = (f"LANG=C.UTF-8 {BIN} play --output null --model {model} --bpm 240 --record {take} "
               f"--log {tmp_path / 'play.log'}; echo EXIT=$?; sleep 120")
    tmux(socket, "new-session", "-d", "-s", "play", "-x", "120", "-y", "40", command)
    try:
        wait_for_screen(socket, lambda ls: len(ls) > 4 and re.search(r"bar [3-9]", "\n".join(ls)),
                        "a few bars to play")
        if how == "ctrl+c":
            tmux(socket, "send-keys", "-t", "play", "C-c")
        else:
            shell = psutil.Process(int(tmux(socket, "display-message", "-p", "-t", "play", "#{pane_pid}")))
            players = [p for p in shell.children() if "play" in " ".join(p.cmdline())]
            assert len(players) == 1, [p.cmdline() for p in shell.children()]
            players[0].send_signal(signal.SIGINT if how == "SIGINT" else signal.SIGTERM)
        lines = wait_for_screen(socket, lambda ls: any(line.startswith("EXIT=") for line in ls), "the exit")
        shown = "\n".join(lines)
        assert "EXIT=0" in shown, shown
        assert f"recorded {take}" in shown and "Traceback" not in shown, shown
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
    count, left = note_balance(take)
    assert count > 0 and not left
    assert not no_partial_files(tmp_path)


# ---- render ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mid", ".wav"])
@pytest.mark.parametrize("sig", SIGNALS)
def test_render_interrupted_writes_a_whole_file(model, tmp_path, sig, suffix):
    out = tmp_path / f"take{suffix}"
    child = Child(["render", "--model", model, "--bars", "400", "--bpm", "240", "-o", out])
    child.wait_for(r"render:\s+\d+%\|[^|]*\|\s*[3-9]\d*/400")  # a few bars written
    child.proc.send_signal(sig)
    code, _, err = child.finish()
    assert code == 130, err
    found = re.search(r"interrupted: wrote the first (\d+) bars", err)
    assert found, err
    played = int(found.group(1))
    assert 3 <= played < 400 and "Traceback" not in err
    if suffix == ".mid":
        count, left = note_balance(out)
        assert count > 0 and not left
    else:
        with wave.open(str(out)) as wav:  # a whole WAV: the header's length matches the data
            assert wav.getnchannels() == 2 and wav.getframerate() == 44100
            assert wav.getnframes() > 2 * 44100  # the bars played, then the 2 s tail
            assert len(wav.readframes(wav.getnframes())) == wav.getnframes() * 4
    assert not no_partial_files(tmp_path)


# ---- dataset build --------------------------------------------------------------------------------------
def test_dataset_build_sigterm_stops_the_workers_and_the_next_run_resumes(tmp_path, shared_data):
    """SIGINT is tests/test_dataset_build.py::test_ctrl_c_leaves_a_state_the_next_run_resumes; SIGTERM
    (a service manager, `kill`) must do the same: workers stopped without a traceback, finished chunks kept."""
    out = tmp_path / "out"
    args = ["dataset", "build", "--out", out, "--sources", "pop909,multitrack", "--limit", "40", "--chunk-size", "2",
            "--workers", "2", "--no-progress", "--data-root", shared_data]
    child = Child(args)
    deadline = time.monotonic() + WAIT_S
    while not list((out / "shards").glob("*.jsonl")):
        assert time.monotonic() < deadline and child.proc.poll() is None, child.stderr
        time.sleep(0.02)
    workers = psutil.Process(child.proc.pid).children(recursive=True)
    assert workers
    child.proc.send_signal(signal.SIGTERM)
    code, _, err = child.finish()
    assert code == 130, err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert not (out / "index.jsonl").exists()
    done = len(list((out / "shards").glob("*.jsonl")))
    again = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["chunks_reused"] >= done and stats["pieces"] == 52
    assert not no_partial_files(out)


# ---- train ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("ds") / "tiny"
    subprocess.run([str(BIN), "dataset", "build", "--sources", "nottingham,groove", "--limit", "20", "--workers", "1",
                    "--no-progress", "--out", str(out), "--data-root", str(shared_data)],
                   check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.parametrize("sig", SIGNALS)
def test_train_saves_on_a_signal_and_resume_continues(tiny_dataset, tmp_path, sig):
    from model.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["train", "--data", tiny_dataset, "--out", run, "--config", TINY_TRAIN, "--threads", "1",
            "--max-steps", "100000", "--eval-interval", "100000", "--checkpoint-interval", "100000"]
    child = Child(args)
    child.wait_for(r"train:.*\| *([3-9]|\d\d+)/100000")  # a few steps done
    child.proc.send_signal(sig)
    code, out, err = child.finish()
    assert code == 130, err
    step = int(re.search(r"interrupted at step (\d+): checkpoint saved", err).group(1))
    assert step >= 3 and "Traceback" not in err
    _, _, meta = load_checkpoint(run)  # whole and loadable
    assert meta["summary"]["step"] == step
    assert (run / "train_state.pt").is_file() and not no_partial_files(run)
    resumed = subprocess.run([str(BIN), *map(str, args[:-6]), "--resume", "--max-steps", str(step + 4),
                              "--json"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["step"] == step + 4 and summary["stopped_by"] is None
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == step + 4  # no step trained twice
    assert load_checkpoint(run)[2]["summary"]["step"] == step + 4
