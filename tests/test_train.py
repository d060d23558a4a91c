"""Training on a tiny real dataset: loss falls, resume continues identically, DDP (gloo × 2) agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint
from model.errors import MoodstreamError
from training.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "training" / "configs" / "tiny.toml"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("ds") / "tiny"
    subprocess.run([str(BIN / "moodstream"), "dataset", "build", "--sources", "nottingham,groove,emopia",
                    "--limit", "30", "--workers", "1", "--no-progress", "--out", str(out),
                    "--data-root", str(shared_data)], check=True, capture_output=True, timeout=300)
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_checkpoint_loads(tiny_dataset, tmp_path):
    cfg = TrainConfig.from_toml(TINY, {"max_steps": 40})
    summary = train(cfg, tiny_dataset, tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    losses = [r["loss"] for r in rows if "loss" in r]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert losses[-1] < losses[0] - 0.5
    assert vals[-1] < vals[0]
    assert summary["step"] == 40 and summary["tokens_seen"] == 40 * cfg.batch_size * cfg.seq_len
    model, vocab, meta = load_checkpoint(tmp_path / "run")
    assert meta["summary"]["step"] == 40
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_resume_continues_identically(tiny_dataset, tmp_path):
    cfg = TrainConfig.from_toml(TINY, {"max_steps": 24, "eval_interval": 8, "checkpoint_interval": 100})
    train(cfg, tiny_dataset, tmp_path / "straight", progress=False)
    train(cfg, tiny_dataset, tmp_path / "split", progress=False, stop_at_step=13)
    assert json.loads((tmp_path / "split" / "model.json").read_text())["summary"]["step"] == 13
    train(cfg, tiny_dataset, tmp_path / "split", resume=True, progress=False)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = lambda run: [(r["step"], r.get("loss"), r.get("val_loss")) for r in _metrics(run)]
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


def test_refuses_to_overwrite_or_resume_nothing(tiny_dataset, tmp_path):
    cfg = TrainConfig.from_toml(TINY, {"max_steps": 2, "eval_interval": 2})
    with pytest.raises(MoodstreamError, match="nothing to resume"):
        train(cfg, tiny_dataset, tmp_path / "none", resume=True, progress=False)
    train(cfg, tiny_dataset, tmp_path / "once", progress=False)
    with pytest.raises(MoodstreamError, match="already holds a training run"):
        train(cfg, tiny_dataset, tmp_path / "once", progress=False)


def test_bad_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(MoodstreamError, match="unknown keys \\['learning_rate'\\]"):
        TrainConfig.from_toml(bad, {})
    with pytest.raises(MoodstreamError, match="bad seq_len"):
        TrainConfig.from_toml(TINY, {"seq_len": 4096})


def test_ddp_gloo_two_processes_matches_single(tiny_dataset, tmp_path):
    steps = 40
    common = ["train", "--data", str(tiny_dataset), "--config", str(TINY), "--max-steps", str(steps),
              "--eval-interval", "20", "--checkpoint-interval", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single = subprocess.run([str(BIN / "moodstream"), *common, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "streamer.cli",
                          *common, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp" / "model.json").read_text())["summary"]
    assert meta["world_size"] == 2
    val = lambda run: [r["val_loss"] for r in _metrics(run) if "val_loss" in r]
    v_single, v_ddp = val(tmp_path / "single"), val(tmp_path / "ddp")
    assert len(v_single) == len(v_ddp) == 2
    # same global batch and schedule; ranks draw different windows, so agreement is within noise
    for a, b in zip(v_single, v_ddp):
        assert abs(a - b) < 0.25 * a, (v_single, v_ddp)
    assert v_ddp[-1] < v_ddp[0]
