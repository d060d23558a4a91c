"""`moodstream render`: the streaming pipeline on the fake clock, into a .mid (everything sent, as the
recorder writes it) or a .wav (FluidSynth offline). Deterministic: the same flags and seed give the same file.
`--switch BAR:GENRE:MOOD` changes the conditions from that bar on, exactly as a live switch would.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from model.errors import MoodstreamError
from streamer.commands.outside import add_cue_args, add_events_arg, check_outside, open_outside
from streamer.commands.stream import (raise_terminate, Terminate, add_music_args, check_model_conditions, check_seed,
                                      generator_config, music_controls)

SUFFIXES = {".mid": "mid", ".midi": "mid", ".wav": "wav"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="render N bars to a .mid or .wav file (same seed, same file)",
        description="Run the streaming pipeline on a simulated clock and write the result; a .wav is "
                    "rendered with FluidSynth.")
    add_music_args(p)
    p.add_argument("--bars", type=int, required=True, help="how many bars to render")
    p.add_argument("--switch", action="append", default=[], metavar="BAR:GENRE:MOOD",
                   help="from bar BAR (0-based) on, play GENRE and MOOD (repeatable)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output file: .mid or .wav")
    add_cue_args(p)
    add_events_arg(p)
    p.set_defaults(func=run)


def parse_switch(text: str, bars: int) -> tuple[int, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].strip().isdigit() or not parts[1] or not parts[2]:
        raise MoodstreamError(f"--switch {text!r}: write BAR:GENRE:MOOD, e.g. --switch 8:jazz:calm")
    bar = int(parts[0])
    if not 1 <= bar < bars:
        raise MoodstreamError(f"--switch {text!r}: bar {bar} must be from 1 to {bars - 1} (bar 0 uses "
                              f"--genre/--mood)")
    return bar, parts[1].strip(), parts[2].strip()


def run(args: argparse.Namespace) -> int:
    from streamer.clock import FakeClock
    from streamer.engine import BarStarted, Engine, EngineConfig
    from streamer.outputs.recorder import check_writable

    controls = music_controls(args)
    generator = generator_config(args)
    check_seed(args.seed)
    if args.bars < 1:
        raise MoodstreamError(f"--bars {args.bars} must be at least 1")
    kind = SUFFIXES.get(args.out.suffix.lower())
    if kind is None:
        raise MoodstreamError(f"-o {args.out}: name a .mid or .wav file")
    check_writable(args.out, "output")
    switches = sorted(parse_switch(s, args.bars) for s in args.switch)
    if len({bar for bar, _, _ in switches}) != len(switches):
        raise MoodstreamError("two --switch options name the same bar: keep one")
    parsed = check_outside(args, args.genre, args.mood)
    model_dir = check_model_conditions(args.model, [(args.genre, args.mood)] + [(g, m) for _, g, m in switches]
                                       + parsed["pairs"])

    clock = FakeClock()
    if kind == "wav":
        from streamer.outputs.synth import FluidSynthRender
        from streamer.soundfont import find_soundfont

        output = FluidSynthRender(args.out, find_soundfont(args.soundfont), clock)
    else:
        from streamer.outputs.recorder import Recorder

        output = Recorder(args.out)
    config = EngineConfig(model_dir=model_dir, device=args.device, realtime=False, max_bars=args.bars,
                          start_delay_s=0.0, midi_clock=False, generator=generator)

    from tqdm import tqdm

    progress = None  # made once the model has loaded: a bad checkpoint is one line, with no bar before it

    def on_news(news):
        if isinstance(news, BarStarted) and progress is not None:
            try:
                progress.update(1)
            except (OSError, ValueError):  # stderr went away: the render goes on
                pass

    engine = None
    outside = None
    interrupted = False
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, raise_terminate), (signal.SIGINT, signal.default_int_handler))}
    try:
        engine = Engine(config, [output], clock, controls, on_news=on_news)
        progress = tqdm(total=args.bars, unit="bar", file=sys.stderr, dynamic_ncols=True, desc="render")
        for bar, genre, mood in switches:
            engine.set_controls(genre=genre, mood=mood, at_bar=bar)
        outside = open_outside(engine, args, parsed, lambda line: print(line, file=sys.stderr), render=True)
        engine.start()
        while not engine.wait(0.2):
            pass
    except (KeyboardInterrupt, Terminate):
        interrupted = True
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if outside is not None:
                outside.close()
            if engine is not None:
                engine.stop()  # the file is written whole (temporary name, then renamed)
            else:  # the render never started: leave no file behind
                output.discard()
        finally:
            if outside is not None:
                outside.close_events()
            try:
                if progress is not None:
                    progress.close()
            except (OSError, ValueError):
                pass
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if engine is not None and engine.error:
        raise MoodstreamError(engine.error)
    if interrupted and engine is None:
        print("moodstream: interrupted before the render started: nothing written", file=sys.stderr)
        return 130
    if interrupted:
        played = engine.stats().scheduler.bars_played
        print(f"moodstream: interrupted: wrote the first {played} bars to {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
