"""Flags for control from outside, shared by play, stream and render: `--osc`, `--control-in`/`--control-map`,
`--switch-at`, `--events`, `--cues`/`--cues-loop`. `check_outside(args, ...)` checks them before the model
loads (one line, exit 1; `check_control_names` checks the map's genres and moods against the model);
`open_outside(engine, args, ...)` starts what they ask for on a built engine and `Outside.close()` ends it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable, Optional

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

OSC_HELP = ("listen for OSC control messages on UDP [HOST:]PORT (default host 127.0.0.1, this machine only; "
            "0.0.0.0 lets anyone on the network control it); see README 'Driving moodstream from a game or a "
            "controller'")
CONTROL_IN_HELP = ("take program changes, CCs and notes from a MIDI controller: a virtual input 'moodstream-control' "
                   "(ALSA, else JACK), or connect to the existing port PORT (a part of its name will do)")
CONTROL_MAP_HELP = ("with --control-in: what each program change, CC and note does (TOML; default: the map "
                    "`moodstream controls` prints)")
SWITCH_AT_HELP = ("where a genre/mood switch lands: beat (the next beat of the bar playing that the model can make; "
                  "the rest of that bar is written again), bar (the next bar line that can make it, default) or "
                  "phrase:N (the next bar number that is a multiple of N)")


def add_events_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=Path, metavar="F.jsonl",
                   help="write one JSON line per bar line, switch, control change, fault and error into this file")


def add_cue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cues", type=Path, metavar="cues.toml",
                   help="change genre, mood, tempo, guidance, temperature, top-p at set bars or times from a TOML "
                        "cue file (format: docs/CONTROL.md 'Cue files')")
    p.add_argument("--cues-loop", action="store_true",
                   help="with --cues: start the cue sheet again after length_bars / length_s")


def add_live_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--osc", metavar="[HOST:]PORT", help=OSC_HELP)
    p.add_argument("--control-in", nargs="?", const="", metavar="PORT", help=CONTROL_IN_HELP)
    p.add_argument("--control-map", type=Path, metavar="F.toml", help=CONTROL_MAP_HELP)
    p.add_argument("--switch-at", default="bar", metavar="beat|bar|phrase:N", help=SWITCH_AT_HELP)


def check_outside(args: argparse.Namespace, default_genre: str, default_mood: str) -> dict:
    """Check the flags before anything heavy loads; returns what they parsed to ({osc, switch_at, cues}) and
    the (genre, mood) pairs cues name (key "pairs", for `check_model_conditions`)."""
    from streamer.controls import parse_switch_at
    from streamer.outputs.recorder import check_writable

    parsed: dict = {"pairs": []}
    if getattr(args, "osc", None) is not None:
        from streamer.osc import parse_target

        parsed["osc"] = parse_target(args.osc)
    if getattr(args, "control_map", None) is not None and getattr(args, "control_in", None) is None:
        raise MoodstreamError("--control-map goes with --control-in [PORT]")
    if getattr(args, "control_in", None) is not None:
        from streamer.control_map import load_control_map

        parsed["control_map"] = load_control_map(args.control_map)
    if getattr(args, "switch_at", None) is not None:
        try:
            parsed["switch_at"] = parse_switch_at(args.switch_at)
        except MoodstreamError as err:
            raise MoodstreamError(f"--switch-at: {err}") from None
    if getattr(args, "events", None) is not None:
        check_writable(args.events, "event log")
    if getattr(args, "cues_loop", False) and getattr(args, "cues", None) is None:
        raise MoodstreamError("--cues-loop goes with --cues FILE")
    if getattr(args, "cues", None) is not None:
        from streamer.cues import load_cues

        sheet = load_cues(args.cues)
        if args.cues_loop:
            sheet.check_loop()
        parsed["cues"] = sheet
        parsed["pairs"] = [(g or default_genre, m or default_mood) for g, m in sheet.conditions()]
    return parsed


def check_control_names(parsed: dict, model_dir: Path) -> None:
    """The genres and moods the control map names, against the model's (one line naming the key)."""
    if "control_map" in parsed:
        from model.paths import TOKENIZER_FILE
        from model.vocab import read_condition_names

        parsed["control_map"].check_names(*read_condition_names(model_dir / TOKENIZER_FILE))


class Outside:
    """What `open_outside` started; `close()` ends it all (idempotent)."""

    def __init__(self):
        self.osc = None
        self.control_in = None
        self.remote = None
        self.events = None
        self.cues = None
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for part in (self.control_in, self.osc, self.remote):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    log.exception("closing %s failed", type(part).__name__)

    def close_events(self) -> None:
        """After the engine stopped (its news delivered)."""
        if self.events is not None:
            self.events.close()


def open_outside(engine, args: argparse.Namespace, parsed: dict, say: Callable[[str], None],
                 record_path: Optional[Callable[[], Path]] = None, render: bool = False) -> Outside:
    """Start the event log, cue player, remote, OSC server and MIDI control input the flags ask for on `engine`
    (before `engine.start()`). `say` prints one line for the user."""
    outside = Outside()
    try:
        if getattr(args, "events", None) is not None:
            from streamer.events import open_event_log

            outside.events = open_event_log(args.events, engine)
        if "switch_at" in parsed:
            engine.set_switch_at(parsed["switch_at"])
        if "cues" in parsed:
            from streamer.cues import CuePlayer

            outside.cues = CuePlayer(engine, parsed["cues"], loop=args.cues_loop, sync=render)
            outside.cues.prime()
        if "osc" in parsed or "control_map" in parsed:
            from streamer.remote import Remote

            outside.remote = Remote(engine, record_path=record_path).start()
        if "control_map" in parsed:
            from streamer.midi_control import ControlInput

            outside.control_in = ControlInput(outside.remote, parsed["control_map"], args.control_in or None).start()
            say(f"moodstream: MIDI control in on {outside.control_in.port_name!r} ({outside.control_in.api})")
        if "osc" in parsed:
            from streamer.osc import OscServer

            host, port = parsed["osc"]
            outside.osc = OscServer(outside.remote, engine.news, host, port).start()
            say(f"moodstream: OSC on {host}:{outside.osc.port} (UDP)")
            if outside.osc.public:
                say(f"moodstream: warning: OSC listens on {host}:{outside.osc.port}: anyone who can reach this "
                    "machine on the network can control the stream; use 127.0.0.1 to keep it local")
    except BaseException:
        outside.close()
        outside.close_events()
        raise
    return outside
