"""`moodstream dataset build`: build the training corpus (token shards, index, tokenizer, stats)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from model.errors import MoodstreamError


def register(subparsers) -> None:
    from training.sources import DEFAULT_SOURCES, SOURCES  # names only: the adapters load when used

    p = subparsers.add_parser("dataset", help="build the training dataset",
                              description="Build and inspect training datasets.")
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build", help="tokenize the sources into a dataset directory",
        description="Tokenize labelled MIDI into --out: token shards, index.jsonl, tokenizer.json, stats.md and "
        "stats.json. Re-running the same command skips finished work (also after Ctrl-C).")
    b.add_argument("--sources", default=None,
                   help=f"comma-separated sources (default: {','.join(DEFAULT_SOURCES)}; also: "
                   f"{','.join(s for s in SOURCES if s not in DEFAULT_SOURCES)})")
    b.add_argument("--out", required=True, type=Path, help="dataset directory to write (or to finish)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizing processes (default: all cores)")
    b.add_argument("--seed", type=int, default=0, help="seed of the generated arrangements (default 0)")
    b.add_argument("--data-root", type=Path, default=None,
                   help="the shared data folder with manifest.csv (default: $MOODSTREAM_DATA or ../shared/data)")
    b.add_argument("--mma-pieces", type=int, default=3600, help="generated arrangements (default 3600)")
    b.add_argument("--midicaps", type=Path, help="MidiCaps JSON-lines label file (source midicaps)")
    b.add_argument("--lakh-root", type=Path, help="folder holding Lakh's lmd_full/ (source midicaps)")
    b.add_argument("--limit", type=int, default=0, help="at most this many pieces per source (quick trial builds)")
    b.add_argument("--chunk-size", type=int, default=32, help="pieces per shard, the unit of resuming (default 32)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.build import BuildConfig, build
    from training.sources import DEFAULT_SOURCES
    from training.sources.base import find_data_root

    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip()) if args.sources else DEFAULT_SOURCES
    if args.midicaps and "midicaps" not in sources and args.sources is None:
        sources = (*sources, "midicaps")
    cfg = BuildConfig(out_dir=args.out, sources=sources, data_root=args.data_root or find_data_root(),
                      workers=args.workers, seed=args.seed, mma_pieces=args.mma_pieces, midicaps=args.midicaps,
                      lakh_root=args.lakh_root, limit=args.limit, chunk_size=args.chunk_size,
                      progress=not args.no_progress)
    main_pid = os.getpid()

    def terminate(signum, frame):  # SIGTERM leaves like Ctrl-C: workers stopped, finished chunks kept
        if os.getpid() == main_pid:
            raise KeyboardInterrupt()
        os._exit(143)  # a worker forked before its initializer ran

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        stats = build(cfg)
    except KeyboardInterrupt as err:
        print(f"moodstream: interrupted: {err or 'run the same command again to resume'}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stats["pieces"] == 0:
        reasons = ", ".join(f"{n} × {r}" for r, n in sorted(stats["skipped"]["by_reason"].items())) or "none found"
        raise MoodstreamError(f"no piece could be read ({stats['skipped']['count']} files skipped: {reasons}): "
                              f"check --data-root and its manifest.csv (details in {args.out / 'stats.md'})")
    run_info = stats["run"]
    print(f"{stats['pieces']:,} pieces, {stats['tokens']:,} tokens ({stats['skipped']['count']} files skipped) "
          f"in {run_info['build_s']} s with {run_info['workers']} worker(s)")
    print(f"genres backed by the data: {len(stats['backed_genres'])} ({', '.join(stats['backed_genres'])})")
    print(f"dataset: {args.out} (see {args.out / 'stats.md'})")
    return 0
