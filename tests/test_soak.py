"""The hour-long soak (slow: `make test-slow`, about 4 minutes here): an hour of music on the fake clock
through `moodstream stream --soak-hours 1`, in its own process so that its memory is measured alone, with
hundreds of genre/mood switches at random moments and a recording. Every note_on has its note_off (in the
stream and in the file), no exception, RSS grows at most 5 MB per hour, the cache is re-anchored many times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.soak import midi_file_problems

BIN = Path(sys.executable).parent / "moodstream"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_an_hour_of_streaming_keeps_every_promise(tiny_model_dir, tmp_path):
    take = tmp_path / "hour.mid"
    out = subprocess.run([str(BIN), "stream", "--soak-hours", "1", "--model", str(tiny_model_dir), "--seed", "0",
                          "--record", str(take), "--json"], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["problems"] == []
    assert report["simulated_s"] >= 3600
    assert report["bars_played"] >= 1000 and report["note_ons"] >= 10_000
    assert report["switches"] >= 200 and report["rollbacks"] >= 100  # hundreds, at random moments
    assert report["reanchors"] >= 100
    assert report["stuck_notes"] == 0 and report["violations"] == 0 and report["error_logs"] == 0
    assert report["generator_failures"] == 0 and report["output_failures"] == 0 and report["underruns"] == 0
    assert report["rss_growth_mb_per_hour"] <= 5.0
    assert report["recorded_note_ons"] == report["note_ons"]
    assert midi_file_problems(take) == (report["note_ons"], [])
