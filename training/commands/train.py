"""`moodstream train`: train a model on a built dataset (config from TOML plus flags; DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on a built dataset",
        description="Train a model on a dataset from `moodstream dataset build`. Settings come from --config "
        "(TOML; see training/configs/) and then from flags. Checkpoints go to --out every "
        "--checkpoint-interval steps and at the end; --resume continues exactly. Under torchrun "
        "(`torchrun --nproc_per_node N -m streamer.cli train ...`) it trains with DDP.")
    p.add_argument("--data", required=True, type=Path, help="built dataset directory")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--config", type=Path, help="TOML file with training settings ([model] table for the shape)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float, help="stop and save after this many minutes of training")
    p.add_argument("--stop-at-step", type=int, help="save and stop at this step (resume later with --resume)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int, help="training window in tokens")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--cond-dropout", type=float, help="chance a condition token becomes `any` (guidance)")
    p.add_argument("--splice-prob", type=float, help="chance a window splices two pieces at a bar line")
    p.add_argument("--eval-interval", type=int)
    p.add_argument("--checkpoint-interval", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--threads", type=int, help="CPU threads per process (default: all cores / processes)")
    p.add_argument("--json", action="store_true", help="print the training summary as JSON at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.train import TrainConfig, train

    model = {k: v for k, v in {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                                "block_size": args.block_size}.items() if v is not None}
    overrides = {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
                 "seq_len": args.seq_len, "lr": args.lr, "warmup_steps": args.warmup_steps,
                 "cond_dropout": args.cond_dropout, "splice_prob": args.splice_prob,
                 "eval_interval": args.eval_interval, "checkpoint_interval": args.checkpoint_interval,
                 "seed": args.seed, "model": model}
    if args.resume and args.config is None:
        from training.train import saved_config

        cfg = TrainConfig.from_dict(saved_config(args.out), overrides)
    else:
        cfg = TrainConfig.from_toml(args.config, overrides)
    summary = train(cfg, args.data, args.out, resume=args.resume, stop_at_step=args.stop_at_step,
                    threads=args.threads)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 130 if summary.get("stopped_by") == "signal" else 0
    if args.json:
        print(json.dumps(summary))
    else:
        val = summary["val_loss"]
        print(f"trained to step {summary['step']} ({summary['tokens_seen']:,} tokens, "
              f"{summary['train_minutes']} min); validation loss {val:.3f}" if val is not None else
              f"trained to step {summary['step']}")
        print(f"checkpoint: {args.out}")
    if summary.get("stopped_by") == "signal":
        print(f"moodstream: interrupted at step {summary['step']}: checkpoint saved; run the same command with "
              f"--resume to continue", file=sys.stderr)
        return 130
    return 0
