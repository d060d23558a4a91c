"""The `moodstream` console script as users run it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "moodstream"


def run(*args, check=False):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120, check=check)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "list" in out.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("moodstream ")


def test_list_json_from_a_vocab_file(tmp_path, vocab):
    path = tmp_path / "tokenizer.json"
    vocab.save(path)
    out = run("list", "--vocab", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["genres"][0] == "any" and "rock" in data["genres"]
    assert data["moods"] == ["any", "happy", "tense", "sad", "calm"]


def test_bad_vocab_is_one_line_without_traceback(shared_data):
    out = run("list", "--vocab", str(shared_data / "manifest.csv"))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "manifest.csv" in out.stderr
