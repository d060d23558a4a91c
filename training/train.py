"""Training loop: AdamW, warm-up + cosine schedule, clipping, periodic validation and checkpoints.

`train(config, dataset_dir, out_dir, resume)` writes a checkpoint directory (model-core format) plus
`train_state.pt` (optimizer, schedule step, RNG and sampler state: `--resume` continues exactly),
`metrics.jsonl` (one line per log/eval step) and `loss.png`. Under torchrun it runs DDP (gloo on CPU,
nccl on CUDA); rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import random
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss.png"


@dataclass(frozen=True)
class ModelShape:
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 192  # width; params ≈ 12·n_layer·n_embd² + vocab·n_embd
    block_size: int = 1024  # longest context in tokens (≈ 5 dense bars, 20+ sparse ones)
    dropout: float = 0.0  # small models on this much data do not overfit in CPU budgets


@dataclass(frozen=True)
class TrainConfig:
    model: ModelShape = field(default_factory=ModelShape)
    batch_size: int = 16  # sequences per optimizer step (split across DDP ranks)
    seq_len: int = 512  # training window length in tokens (≤ block_size)
    max_steps: int = 2000
    max_minutes: float = 0.0  # stop (and save) after this wall time; 0 = no limit
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    cond_dropout: float = 0.15  # chance each axis's label is replaced by the null condition (for guidance)
    joint_dropout: float = 0.0  # chance both axes are (for guidance's unconditioned row)
    splice_prob: float = 0.25  # chance a window switches to other pieces at bar lines
    max_switches: int = 1  # a switching window switches 1..max_switches times
    one_axis_share: float = 0.0  # share of switches that change genre or mood only
    bar_conditions: bool = False  # the conditioning block before every Bar (the model's `bar_conditions`)
    generated_cap: float = 0.30  # at most this share of windows from generated arrangements (mma)
    window_moods: bool = False  # derived moods labelled per window part from its music, not per piece
    eval_interval: int = 100  # steps between validation runs
    eval_batches: int = 10  # batches per validation run
    log_interval: int = 10
    checkpoint_interval: int = 250  # steps between checkpoints (always one at the end)
    seed: int = 1337

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size > 0,
            "seq_len": 8 <= self.seq_len <= self.model.block_size,
            "max_steps": self.max_steps > 0,
            "lr": self.lr > 0 and self.min_lr >= 0 and self.min_lr <= self.lr,
            "cond_dropout": 0 <= self.cond_dropout <= 1,
            "splice_prob": 0 <= self.splice_prob <= 1,
            "joint_dropout": 0 <= self.joint_dropout <= 1,
            "max_switches": self.max_switches >= 1,
            "one_axis_share": 0 <= self.one_axis_share <= 1,
            "generated_cap": 0 <= self.generated_cap <= 1,
            "warmup_steps": 0 <= self.warmup_steps,
            "grad_clip": self.grad_clip >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise MoodstreamError(f"train config: bad {name} = {getattr(self, name)!r}")

    @classmethod
    def from_toml(cls, path: Path | None, overrides: dict) -> "TrainConfig":
        """Settings from a TOML file (a [model] table gives the shape), then non-None `overrides`."""
        data: dict = {}
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as err:
                raise MoodstreamError(f"{path}: cannot read train config ({err})") from err
        return cls.from_dict(data, overrides)

    @classmethod
    def from_dict(cls, data: dict, overrides: dict) -> "TrainConfig":
        data = dict(data)
        overrides = dict(overrides)
        model_data = {**data.pop("model", {}), **{k: v for k, v in overrides.pop("model", {}).items()
                                                   if v is not None}}
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise MoodstreamError(f"train config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        model_known = {f.name for f in dataclasses.fields(ModelShape)}
        if set(model_data) - model_known:
            raise MoodstreamError(f"train config [model]: unknown keys {sorted(set(model_data) - model_known)}")
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(model=ModelShape(**model_data), **data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr at max_steps (Loshchilov & Hutter 2017)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_type: str) -> _Dist:
    import torch.distributed as dist

    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plot_curve(metrics_path: Path, out_png: Path) -> None:
    """Training and validation loss against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)


def saved_config(out_dir: Path) -> dict:
    """The config a run in `out_dir` was started with (for --resume without --config)."""
    import torch

    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise MoodstreamError(f"{path}: nothing to resume (no training state); drop --resume")
    return torch.load(path, map_location="cpu", weights_only=False)["config"]


def train(cfg: TrainConfig, dataset_dir: Path, out_dir: Path, resume: bool = False,
          progress: bool = True, stop_at_step: int | None = None, threads: int | None = None) -> dict:
    """Train (or resume) into `out_dir`; returns the training summary saved with the checkpoint.

    `stop_at_step` saves and stops early at that step (the schedule still runs to max_steps), so a run
    can be split into sessions; `--resume` picks it up exactly."""
    import torch
    from tqdm import tqdm

    from model.checkpoint import save_checkpoint
    from model.gpt import GPT, GPTConfig
    from model.vocab import Vocab
    from training.windows import WindowSampler

    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if not (dataset_dir / "tokenizer.json").is_file():
        raise MoodstreamError(f"{dataset_dir}: not a built dataset (no tokenizer.json); "
                              "run `moodstream dataset build --out DIR` first")
    device = _pick_device()
    dist_info = _init_distributed(device)
    if device == "cuda":
        device = f"cuda:{dist_info.local_rank}"
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // dist_info.world))
    if cfg.batch_size % dist_info.world:
        raise MoodstreamError(f"batch_size {cfg.batch_size} must divide by the {dist_info.world} DDP ranks")
    local_batch = cfg.batch_size // dist_info.world

    vocab = Vocab.load(dataset_dir / "tokenizer.json")
    state_path = out_dir / STATE_FILE
    if resume and not state_path.is_file():
        raise MoodstreamError(f"{state_path}: nothing to resume (no training state); drop --resume")
    if not resume and state_path.is_file():
        raise MoodstreamError(f"{out_dir} already holds a training run; pass --resume or pick another --out")

    random.seed(cfg.seed + dist_info.rank)
    torch.manual_seed(cfg.seed)  # same init on every rank
    gpt_config = GPTConfig(vocab_size=vocab.vocab_size, n_layer=cfg.model.n_layer, n_head=cfg.model.n_head,
                           n_embd=cfg.model.n_embd, block_size=cfg.model.block_size, dropout=cfg.model.dropout,
                           bar_conditions=cfg.bar_conditions)
    model = GPT(gpt_config).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    sampler = WindowSampler(dataset_dir, "train", block_size=cfg.seq_len, batch_size=local_batch,
                            splice_prob=cfg.splice_prob, cond_dropout=cfg.cond_dropout,
                            seed=cfg.seed + 1000 * dist_info.rank, bar_blocks=cfg.bar_conditions,
                            max_switches=cfg.max_switches, one_axis_share=cfg.one_axis_share,
                            joint_dropout=cfg.joint_dropout, generated_cap=cfg.generated_cap,
                            window_moods=cfg.window_moods)
    val_sampler_seed = cfg.seed + 7

    step, tokens_seen, elapsed_s = 0, 0, 0.0
    best_val = float("inf")
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(out_dir / "model.safetensors", device="cpu"))
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"][dist_info.rank] if dist_info.world > 1 else state["sampler"][0])
        _set_rng_state(state["rng"])
        step, tokens_seen, elapsed_s = state["step"], state["tokens_seen"], state["elapsed_s"]
        best_val = state.get("best_val", best_val)
        log.info("resumed %s at step %d", out_dir, step)
    n_params = sum(p.numel() for p in model.parameters())

    train_model = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if "cuda" in device else None)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if "cuda" in device
                else torch.autocast("cpu", enabled=False))
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / METRICS_FILE

    def evaluate() -> float:
        model.eval()
        val = WindowSampler(dataset_dir, "validation", block_size=cfg.seq_len, batch_size=local_batch,
                            splice_prob=0.0, cond_dropout=0.0, seed=val_sampler_seed, bar_blocks=cfg.bar_conditions,
                            window_moods=cfg.window_moods)
        losses = []
        with torch.no_grad(), autocast:
            for _ in range(cfg.eval_batches):
                x, y = val.next_batch()
                _, loss = model(x.to(device), targets=y.to(device))
                losses.append(loss.item())
        model.train()
        value = sum(losses) / len(losses)
        if dist_info.world > 1:
            import torch.distributed as dist

            t = torch.tensor([value], device=device)
            dist.all_reduce(t)
            value = t.item() / dist_info.world
        return value

    def summary(val_loss: float | None) -> dict:
        return {"step": step, "tokens_seen": tokens_seen, "train_minutes": round(elapsed_s / 60, 2),
                "val_loss": val_loss, "best_val_loss": best_val if best_val < float("inf") else None,
                "n_params": n_params, "device": device, "world_size": dist_info.world,
                "dataset": str(dataset_dir), "config": cfg.to_dict()}

    def save(val_loss: float | None) -> None:
        samplers = [sampler.state_dict()]
        if dist_info.world > 1:  # a collective: every rank takes part, rank 0 writes
            import torch.distributed as dist

            samplers = [None] * dist_info.world
            dist.all_gather_object(samplers, sampler.state_dict())
        if not dist_info.main:
            return
        save_checkpoint(out_dir, model, vocab, summary(val_loss))
        _atomic_torch_save({"optimizer": optimizer.state_dict(), "sampler": samplers, "rng": _rng_state(),
                            "step": step, "tokens_seen": tokens_seen, "elapsed_s": elapsed_s,
                            "best_val": best_val, "config": cfg.to_dict()}, state_path)
        if metrics_path.is_file():
            plot_curve(metrics_path, out_dir / CURVE_FILE)

    stop_requested = False
    stopped_by = None  # why the loop ended early: "signal", "time budget", "--stop-at-step"

    def _request_stop(signum, frame):  # finish the step, save, exit cleanly
        nonlocal stop_requested
        stop_requested = True

    old_handlers = {}
    if dist_info.main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old_handlers[sig] = signal.signal(sig, _request_stop)
            except ValueError:  # not the main thread
                pass

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and dist_info.main),
               desc="train", unit="step", dynamic_ncols=True)
    val_loss = None
    last_log_t, last_log_tokens = time.monotonic(), tokens_seen
    run_start = time.monotonic() - elapsed_s
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes > 0 else float("inf")
    left_loop = False
    try:
        while step < cfg.max_steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            x, y = sampler.next_batch()
            x, y = x.to(device), y.to(device)
            with autocast:
                _, loss = train_model(x, targets=y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            tokens_seen += x.numel() * dist_info.world
            elapsed_s = time.monotonic() - run_start
            row = None
            if step % cfg.log_interval == 0 or step == cfg.max_steps:
                now = time.monotonic()
                tok_s = (tokens_seen - last_log_tokens) / max(1e-9, now - last_log_t)
                last_log_t, last_log_tokens = now, tokens_seen
                row = {"step": step, "loss": round(loss.item(), 4), "lr": lr_at(step - 1, cfg),
                       "tok_s": round(tok_s), "elapsed_s": round(elapsed_s, 1)}
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tok_s:,.0f}",
                                val=f"{val_loss:.3f}" if val_loss is not None else "-")
            if step % cfg.eval_interval == 0 or step == cfg.max_steps:
                val_loss = evaluate()
                best_val = min(best_val, val_loss)
                row = {**(row or {"step": step}), "val_loss": round(val_loss, 4)}
            if row is not None and dist_info.main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.update(1)
            stop_flag = stop_requested or elapsed_s > budget_s or step == stop_at_step
            if dist_info.world > 1:
                import torch.distributed as dist

                t = torch.tensor([1.0 if stop_flag else 0.0], device=device)
                dist.all_reduce(t)
                stop_flag = t.item() > 0
            if step % cfg.checkpoint_interval == 0 or stop_flag or step == cfg.max_steps:
                save(val_loss)
            if stop_flag:
                reason = "signal" if stop_requested else "time budget" if elapsed_s > budget_s else "--stop-at-step"
                log.warning("stopping at step %d (%s); resume with --resume", step, reason)
                stopped_by = reason
                break
        left_loop = True
    finally:
        bar.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if dist_info.world > 1:
            import torch.distributed as dist

            if left_loop:  # every rank left the loop at the same step: leave together (rank 0 may still be saving)
                dist.barrier()
            # DDP's reducer holds gloo work objects; freed later, at interpreter exit, they can abort the
            # process ("terminate called without an active exception", seen once in CI): free them now.
            del train_model
            gc.collect()
            dist.destroy_process_group()
    return {**summary(val_loss), "stopped_by": stopped_by}
