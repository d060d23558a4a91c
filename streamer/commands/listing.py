"""`moodstream list`: the genres and moods a model (or a vocabulary file) knows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.paths import TOKENIZER_FILE, resolve_model_dir


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the genres and moods of the model in use",
                              description="Print the genres and moods of the model in use "
                              "(the bundled default unless --model), or of a vocabulary file.")
    p.add_argument("--model", help="checkpoint directory (default: the bundled model)")
    p.add_argument("--vocab", type=Path, help="a tokenizer JSON instead of a model")
    p.add_argument("--json", action="store_true", help="print a JSON object with `genres` and `moods`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.vocab import read_condition_names

    path = args.vocab if args.vocab else resolve_model_dir(args.model) / TOKENIZER_FILE
    genres, moods = read_condition_names(path)
    if args.json:
        print(json.dumps({"genres": list(genres), "moods": list(moods), "source": str(path)}))
    else:
        print(f"genres: {' '.join(genres)}")
        print(f"moods:  {' '.join(moods)}")
    return 0
