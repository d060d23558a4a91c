"""The `moodstream` command line: one parser, one subcommand module each.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Modules import heavy libraries (torch, MidiTok) inside `func`, so `--help` stays fast.
Errors the user can fix are `MoodstreamError`s and print as one line; no traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

COMMAND_MODULES = (
    "streamer.commands.play",
    "streamer.commands.stream",
    "streamer.commands.render",
    "streamer.commands.listing",
    "streamer.commands.bench",
    "streamer.commands.send",
    "streamer.commands.controls",
    "training.commands.dataset",
    "training.commands.train",
    "training.commands.evaluate",
)


def _version() -> str:
    try:
        return version("moodstream")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodstream",
        description="Real-time MIDI streaming instrument: a small transformer writes music "
        "conditioned on a genre and a mood.",
    )
    parser.add_argument("--version", action="version", version=f"moodstream {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # this command is not built yet
                continue
            raise
        module.register(subparsers)
    return parser


class OneLineErrors(logging.Formatter):
    """Log records that carry an exception print it as one line (the traceback with -vv or MOODSTREAM_DEBUG):
    a thread that recovers from an error must not fill the terminal with a traceback."""

    def __init__(self, fmt: str, tracebacks: bool):
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not self.tracebacks:
            error = record.exc_info[1]
            text = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "args": None,
                                            "msg": f"{record.getMessage()} ({type(error).__name__}: {text})"})
        return super().format(record)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    tracebacks = args.verbose >= 2 or bool(os.environ.get("MOODSTREAM_DEBUG"))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OneLineErrors("%(levelname)s %(name)s: %(message)s", tracebacks))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MoodstreamError as err:
        print(f"moodstream: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moodstream: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # last resort: one line, the traceback only on request
        if os.environ.get("MOODSTREAM_DEBUG"):
            raise
        print(f"moodstream: internal error: {type(err).__name__}: {err} "
              "(set MOODSTREAM_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
