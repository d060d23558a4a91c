"""`moodstream play` in a real terminal: tmux runs the console script, the test types keys and reads the
screen. Waits are bounded polls for what should appear, never timed assertions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.tui.app import GENRE_LABELS

BIN = Path(sys.executable).parent / "moodstream"
WAIT_S = 90.0


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


def test_play_switches_genre_from_the_keyboard_and_quits_cleanly(tiny_model_dir, vocab, tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux not found: install it with scripts/setup-system.sh")
    socket = f"moodstream-test-{os.getpid()}"
    log = tmp_path / "play.log"
    command = (f"LANG=C.UTF-8 {BIN} play --output null --model {tiny_model_dir} --genre jazz --mood calm "
               f"--log {log}; echo EXIT=$?; sleep 120")
    tmux(socket, "new-session", "-d", "-s", "play", "-x", "120", "-y", "40", command)
    try:
        lines = wait_for_screen(socket, lambda ls: len(ls) > 4 and "bar " in "\n".join(ls)
                                and "jazz · calm" in ls[1], "the stream to play jazz · calm")
        assert "→" not in lines[1]
        tmux(socket, "send-keys", "-t", "play", GENRE_LABELS[vocab.genres.index("rock")])
        lines = wait_for_screen(socket, lambda ls: "rock · calm" in ls[1], "the banner to show rock")
        assert "jazz · calm → rock · calm at bar" in lines[1] or lines[1].strip("│ ") == "rock · calm"
        wait_for_screen(socket, lambda ls: "jazz" not in ls[1] and "rock · calm" in ls[1],
                        "rock · calm to play")
        tmux(socket, "send-keys", "-t", "play", "q")
        lines = wait_for_screen(socket, lambda ls: any(line.startswith("EXIT=") for line in ls), "the exit")
        shown = "\n".join(lines)
        assert "EXIT=0" in shown, shown
        assert "Traceback" not in shown and "error" not in shown.lower(), shown
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
