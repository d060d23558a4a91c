"""`moodstream bench`: measure decode speed, real-time factor, switch timing, send error and memory of a
model in one run, against the goals; a table, or one JSON object with `--json` (keys: docs/CONTRACTS.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.errors import MoodstreamError
from streamer.commands.stream import add_rt_priority_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure real-time performance (decode speed, RTF, switches, timing, memory)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure one model's real-time performance in one run and check it against the goals.\n\n"
                    "Headline figures: decode_tok_s / decode_p50_ms / decode_p99_ms are batch-1 decoding of the\n"
                    "model (the bundled default unless --model) with 512 tokens of context: grammar mask,\n"
                    "sampling and model step, as the streamer runs them. Also: the same at 128 and 1024 tokens,\n"
                    "the speed-up over a seed-style TransformerEncoder recomputing the whole sequence per token\n"
                    "(baseline_speedup_1k), the real-time factor of the densest 1 % of bars at 120 BPM with\n"
                    "guidance off and on (fake clock), genre/mood switch timing, send error and underruns (real\n"
                    "clock, with the bare timer's lateness at the same thread priority; --rt-priority), memory\n"
                    "growth per simulated hour. A full run takes several minutes; figures are only as quiet as\n"
                    "the machine (its load average is reported).")
    p.add_argument("--model", help="checkpoint directory (default: the bundled model)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default: cuda if present)")
    p.add_argument("--quick", action="store_true",
                   help="short runs (15 s real clock, 2 simulated minutes): a smoke test, not figures to quote")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--int8", action="store_true", help="bench the int8 dynamic-quantised model (CPU)")
    p.add_argument("--levers", action="store_true",
                   help="also measure the speed levers: the fused step vs GPT.forward, 1 vs 2 threads, int8, "
                        "torch.compile, --rt-priority auto vs off, guidance batching, model shapes (and BPE with "
                        "--bpe-data)")
    p.add_argument("--bpe-data", type=Path, metavar="DATASET_DIR",
                   help="with --levers: a built dataset on which to measure BPE tokens per bar")
    p.add_argument("--stream-seconds", type=float,
                   help="length of the real-clock run (default 60; quick 15; the underrun goal is for 600)")
    p.add_argument("--simulated-minutes", type=float,
                   help="length of the fake-clock memory soak (default 60; quick 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_rt_priority_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streamer.bench import BenchConfig, format_table, run_bench

    if args.bpe_data is not None and not args.levers:
        raise MoodstreamError("--bpe-data is measured with the levers: add --levers")
    if args.bpe_data is not None and not (args.bpe_data / "index.jsonl").is_file():
        raise MoodstreamError(f"--bpe-data {args.bpe_data}: not a built dataset (no index.jsonl); "
                              "run `moodstream dataset build --out DIR` first")
    config = BenchConfig(model_dir=Path(args.model) if args.model else None, device=args.device, quick=args.quick,
                         int8=args.int8, stream_seconds=args.stream_seconds,
                         simulated_minutes=args.simulated_minutes, levers=args.levers, bpe_data=args.bpe_data,
                         seed=args.seed, rt_priority=args.rt_priority)
    with tqdm(total=None, file=sys.stderr, desc="bench", bar_format="{desc}: {elapsed} {postfix}",
              dynamic_ncols=True) as bar:
        result = run_bench(config, progress=lambda stage: bar.set_postfix_str(stage))
    if args.json:
        print(json.dumps(result, indent=None, sort_keys=False))
    else:
        print(format_table(result))
    return 0
