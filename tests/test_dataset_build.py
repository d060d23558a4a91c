"""`moodstream dataset build` end to end on tiny real builds: outputs, skips, resuming, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model.errors import MoodstreamError
from training.build import BuildConfig, build

REPO = Path(__file__).resolve().parent.parent


def _cfg(out, shared_data, **kw):
    base = dict(out_dir=out, sources=("emopia", "vgmidi", "pop909", "nottingham", "groove", "multitrack", "mma"),
                data_root=shared_data, workers=1, limit=4, mma_pieces=9, chunk_size=4, progress=False)
    return BuildConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("tiny")
    stats = build(_cfg(out, shared_data))
    return out, stats


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_outputs_and_index_match_the_shards(tiny):
    from model.vocab import Vocab

    out, stats = tiny
    for name in ("index.jsonl", "tokenizer.json", "stats.md", "stats.json"):
        assert (out / name).is_file()
    assert not list(out.rglob("*.tmp*"))
    vocab = Vocab.load(out / "tokenizer.json")
    rows = _index(out)
    assert len(rows) == stats["pieces"] > 0
    assert {r["source"] for r in rows} == {"emopia", "vgmidi", "pop909", "nottingham", "groove", "multitrack", "mma"}
    for row in rows:
        shard = np.load(out / row["shard"], mmap_mode="r")
        assert shard.dtype == np.uint16
        ids = shard[row["offset"]:row["offset"] + row["length"]]
        assert len(ids) == row["length"] and row["bars"][0] == 0
        assert all(int(ids[b]) == vocab.bar_id for b in row["bars"])
        assert int((ids == vocab.bar_id).sum()) == len(row["bars"])
        assert not any(vocab.is_condition(int(i)) for i in ids[:50])  # shards hold REMI only
        assert row["mood_origin"] in ("human", "derived", "none") and row["split"] in ("train", "validation")
    # a piece decodes back to notes
    row = next(r for r in rows if r["source"] == "emopia")
    ids = np.load(out / row["shard"])[row["offset"]:row["offset"] + row["length"]]
    assert sum(len(t.notes) for t in vocab.decode(ids.tolist()).tracks) > 10


def test_splits_are_group_disjoint_and_kept_from_the_manifest(tiny, shared_data):
    import csv

    out, _ = tiny
    rows = _index(out)
    splits = {}
    for row in rows:
        assert splits.setdefault(row["group"], row["split"]) == row["split"]
    with (shared_data / "manifest.csv").open(newline="") as f:
        manifest = {r["path"]: r["split"] for r in csv.DictReader(f)}
    emopia = [r for r in rows if r["source"] == "emopia"]
    assert {r["split"] for r in emopia} == {"train", "validation"}
    for r in emopia:
        assert r["split"] == manifest[f"emopia/{r['piece'].split('/', 1)[1]}.mid"]


def test_stats_count_pieces_tokens_per_cell_and_speed(tiny):
    out, stats = tiny
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["pieces"] == stats["pieces"]
    rows = _index(out)
    assert sum(c["pieces"] for c in stats["cells"].values()) == len(rows)
    assert sum(c["tokens"] for c in stats["cells"].values()) == sum(r["length"] for r in rows) == stats["tokens"]
    run = stats["run"]
    assert run["workers"] == 1 and run["files_per_s"] > 0 and run["tokens_per_s"] > 0 and run["build_s"] > 0
    md = (out / "stats.md").read_text()
    assert "Genre × mood (train)" in md and "files/s" in md and "Effective training mix" in md


def test_skips_corrupt_empty_noteless_and_absurd_files_and_counts_them(tmp_path, shared_data):
    import symusic

    root = tmp_path / "data"
    (root / "multitrack").mkdir(parents=True)
    shutil.copy(shared_data / "corrupt" / "ValueError_Control168.mid", root / "multitrack" / "corrupt.mid")
    (root / "multitrack" / "empty.mid").write_bytes(b"")
    shutil.copy(shared_data / "multitrack" / "Funkytown.mid", root / "multitrack" / "good.mid")
    noteless = symusic.Score(480)
    noteless.tempos.append(symusic.Tempo(0, 120))
    noteless.tracks.append(symusic.Track(name="silent", program=0))
    noteless.dump_midi(str(root / "multitrack" / "noteless.mid"))
    long = symusic.Score(480)
    track = symusic.Track(name="long", program=0)
    for minute in range(32):  # one note a minute at 120 bpm: 32 minutes of music
        track.notes.append(symusic.Note(minute * 120 * 480, 480, 60, 80))
    long.tracks.append(track)
    long.dump_midi(str(root / "multitrack" / "long.mid"))
    names = ["corrupt", "empty", "good", "noteless", "long"]
    (root / "manifest.csv").write_text("path,source,style,mood,valence,arousal,kind,group,split\n" + "".join(
        f"multitrack/{n}.mid,MidiTok-tests,,,,,,,train\n" for n in names))
    stats = build(BuildConfig(out_dir=tmp_path / "out", sources=("multitrack",), data_root=root, workers=1,
                              progress=False))
    assert stats["pieces"] == 1
    reasons = {Path(f["path"]).stem: f["reason"] for f in stats["skipped"]["files"]}
    assert reasons["corrupt"].startswith("unreadable MIDI")
    assert reasons["empty"] == "empty file"
    assert reasons["noteless"] == "no notes"
    assert reasons["long"].startswith("longer than 30 min")
    assert stats["skipped"]["count"] == 4 and sum(stats["skipped"]["by_reason"].values()) == 4
    md = (tmp_path / "out" / "stats.md").read_text()
    assert "1 × empty file" in md and "1 × no notes" in md


def test_rerun_reuses_chunks_and_redoes_only_missing_ones(tmp_path, shared_data):
    out = tmp_path / "out"
    cfg = _cfg(out, shared_data, sources=("emopia", "nottingham", "groove"), limit=6, chunk_size=3)
    first = build(cfg)
    index_before = (out / "index.jsonl").read_text()
    assert first["run"]["chunks_reused"] == 0
    # a crash after some chunks: drop outputs and two chunks, leave a half-written file behind
    shards = sorted((out / "shards").glob("*.jsonl"))
    for path in (shards[1], shards[4]):
        path.unlink()
    (out / "shards" / "00002-deadbeef.npy.tmp123").write_bytes(b"half")
    (out / "index.jsonl").unlink()
    second = build(cfg)
    assert second["run"]["chunks_built"] == 2 and second["run"]["chunks_reused"] == first["run"]["chunks"] - 2
    assert (out / "index.jsonl").read_text() == index_before
    assert not list(out.rglob("*.tmp*"))
    third = build(cfg)  # nothing left to do
    assert third["run"]["chunks_built"] == 0
    # another source list: old chunks that no longer belong are removed
    build(_cfg(out, shared_data, sources=("emopia",), limit=6, chunk_size=3))
    assert len(list((out / "shards").glob("*.npy"))) == 2


def test_ctrl_c_leaves_a_state_the_next_run_resumes(tmp_path, shared_data):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "streamer.cli", "dataset", "build", "--out", str(out), "--sources",
           "pop909,multitrack", "--limit", "200", "--chunk-size", "2", "--workers", "2", "--no-progress",
           "--data-root", str(shared_data)]
    # a runner started in the background (`cmd &`, nohup) ignores SIGINT, and so would the build it starts
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("*.jsonl")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    assert not (out / "index.jsonl").exists()
    done = len(list((out / "shards").glob("*.jsonl")))
    assert 1 <= done < 106
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["chunks_reused"] >= done and stats["pieces"] == 212
    assert not list(out.rglob("*.tmp*"))


def test_config_errors_are_one_line(tmp_path, shared_data):
    with pytest.raises(MoodstreamError, match="unknown source 'lakh'"):
        _cfg(tmp_path, shared_data, sources=("lakh",))
    with pytest.raises(MoodstreamError, match="--midicaps"):
        _cfg(tmp_path, shared_data, sources=("midicaps",))
    with pytest.raises(MoodstreamError, match="manifest.csv"):
        build(_cfg(tmp_path / "o", tmp_path, sources=("emopia",)))


def test_cli_reports_figures(tmp_path, shared_data):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "streamer.cli", "dataset", "build", "--out", str(out), "--sources",
                           "emopia,vgmidi", "--limit", "3", "--workers", "1", "--data-root", str(shared_data)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MOODSTREAM_DATA": str(shared_data)})
    assert proc.returncode == 0, proc.stderr
    assert "6 pieces" in proc.stdout and "stats.md" in proc.stdout
    assert "dataset build" in proc.stderr  # the progress bar goes to stderr
