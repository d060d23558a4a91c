"""`moodstream controls [--control-map F] [--model M] [--toml]`: print what a MIDI controller does (the default
map, or F after checking it, genre and mood names against the model); a bad map is one line naming the key."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "controls", help="print the MIDI control map (--control-in): what each program change, CC and note does",
        description="Print the MIDI control map that play/stream --control-in use: the default one, or check and "
                    "print --control-map F. --toml prints the file itself, to start a map of your own.")
    p.add_argument("--control-map", type=Path, metavar="F.toml", help="a map of your own (default: the bundled one)")
    p.add_argument("--model", help="check genre and mood names against this model (default: the bundled model)")
    p.add_argument("--toml", action="store_true", help="print the map file as it is")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.paths import TOKENIZER_FILE, resolve_model_dir
    from model.vocab import read_condition_names
    from streamer.control_map import load_control_map

    control_map = load_control_map(args.control_map)
    control_map.check_names(*read_condition_names(resolve_model_dir(args.model) / TOKENIZER_FILE))
    if args.toml:
        print(Path(control_map.path).read_text(encoding="utf-8"), end="")
    else:
        print("\n".join(control_map.describe()))
    return 0
