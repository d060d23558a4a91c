"""`moodstream stream`: headless streaming to FluidSynth, a MIDI port (DAW feed) and/or a recording,
until Ctrl-C, SIGTERM or `--bars N`. Every stop sends all notes off, closes the ports and writes the
recording. Also holds the flags and checks that `render` shares.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from model.errors import MoodstreamError
from model.vocab import MOOD_NEGATIVES
from streamer.commands.outside import (add_cue_args, add_events_arg, add_live_args, check_control_names,
                                       check_outside, open_outside)
from streamer.controls import Controls

log = logging.getLogger(__name__)


def add_music_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by stream and render: what to play and with which model."""
    p.add_argument("--genre", default="any", help="genre (see `moodstream list`; default: any)")
    p.add_argument("--mood", default="any", help="mood (see `moodstream list`; default: any)")
    p.add_argument("--bpm", type=float, help="tempo in beats per minute, 20-300 (default: the model's tempo)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same music")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0-2 (default 1)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, (0, 1] (default 0.95)")
    p.add_argument("--guidance", type=float, default=Controls.guidance_w,
                   help=f"classifier-free guidance strength, 0-10 (1 = plain conditioning; "
                        f"default {Controls.guidance_w})")
    p.add_argument("--switch-context", default=None, metavar="BARS|all",
                   help="after a genre/mood switch, keep this many bars of the old music in the model's context "
                        "(0 = start afresh from the new conditions; all = keep what fits; default "
                        f"{_default_switch_context()})")
    p.add_argument("--mood-negative", choices=MOOD_NEGATIVES, default=None,
                   help="guide the mood away from no mood (null) or from its opposite (happy ↔ sad, tense ↔ calm): "
                        "opposite follows the mood more and the genre less (model card; default "
                        f"{_default_generator_option('mood_negative')})")
    p.add_argument("--model", help="checkpoint directory (default: the bundled model)")
    p.add_argument("--soundfont", help="General MIDI .sf2 file for FluidSynth (default: looked up)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default: cuda if present)")


RT_PRIORITY_HELP = ("auto: the thread that sends MIDI on time runs at real-time priority (SCHED_FIFO) where the "
                    "system permits it (Linux: rtprio in limits.conf, e.g. the audio group), else at nice -10; "
                    "off: nice -10 only (default: auto)")


def add_rt_priority_arg(p: argparse.ArgumentParser) -> None:
    """--rt-priority, shared by play, stream and bench."""
    p.add_argument("--rt-priority", choices=("auto", "off"), default="auto", help=RT_PRIORITY_HELP)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stream", help="stream music headless (FluidSynth, a MIDI port for a DAW, a recording)",
        description="Stream music without the terminal UI until Ctrl-C or --bars N. The UI is `moodstream play`.")
    # accepted so that scripts written as the design spells the command (`stream --no-ui`) keep working
    p.add_argument("--no-ui", action="store_true", help=argparse.SUPPRESS)
    add_music_args(p)
    p.add_argument("--output", default="fluidsynth",
                   help="where the music goes: fluidsynth, port, null, or several separated by commas "
                        "(default: fluidsynth)")
    p.add_argument("--bars", type=int, help="stop after this many bars (default: run until Ctrl-C)")
    p.add_argument("--record", type=Path, help="also record everything sent into this .mid file")
    p.add_argument("--port", help="send to this existing MIDI port instead of a virtual port 'moodstream'")
    p.add_argument("--sync", choices=("internal", "external"), default="internal",
                   help="internal: our tempo, MIDI clock sent on the port; external: follow MIDI clock and "
                        "start/stop received on the virtual input 'moodstream-sync'")
    p.add_argument("--no-clock", action="store_true", help="do not send MIDI clock on the port")
    p.add_argument("--lookahead", type=int, default=2, help="bars written ahead of playback, 1-64 (default 2)")
    p.add_argument("--driver", default="auto", help="FluidSynth audio driver (default: auto = pipewire, "
                                                     "pulseaudio, alsa, jack)")
    add_rt_priority_arg(p)
    add_live_args(p)
    add_cue_args(p)
    add_events_arg(p)
    p.add_argument("--soak-hours", type=float, metavar="H",
                   help="reliability soak instead of playing: H hours of music on a simulated clock (as fast as "
                        "the model writes) with genre/mood switches at random moments, checking every message; "
                        "exit 1 if a check fails (uses --model, --seed, --genre, --mood, --bpm, --record)")
    p.add_argument("--json", action="store_true", help="with --soak-hours: print the soak report as JSON")
    p.set_defaults(func=run)


def _default_switch_context() -> str:
    bars = _default_generator_option("switch_context_bars")
    return "all" if bars is None else str(bars)


def _default_generator_option(name: str):
    from streamer.generator import GeneratorConfig

    return getattr(GeneratorConfig, name)


def generator_config(args: argparse.Namespace):
    """The GeneratorConfig the flags ask for (--seed, --switch-context, --mood-negative); one-line errors for
    bad values."""
    from streamer.generator import GeneratorConfig, parse_switch_context

    check_seed(args.seed)
    options = {}
    if args.switch_context is not None:
        options["switch_context_bars"] = parse_switch_context(args.switch_context)
    if args.mood_negative is not None:
        options["mood_negative"] = args.mood_negative
    return GeneratorConfig(seed=args.seed, **options)


def music_controls(args: argparse.Namespace):
    """The Controls the flags ask for (ranges checked; genre and mood are checked against the model)."""
    from streamer.controls import Controls

    return Controls(genre=args.genre, mood=args.mood, temperature=args.temperature, top_p=args.top_p,
                    guidance_w=args.guidance, bpm=args.bpm)


def check_model_conditions(model: str | None, pairs: list[tuple[str, str]]) -> Path:
    """Resolve --model and check every (genre, mood) against its vocabulary before loading anything heavy."""
    from model.paths import TOKENIZER_FILE, resolve_model_dir
    from model.vocab import read_condition_names

    directory = resolve_model_dir(model)
    genres, moods = read_condition_names(directory / TOKENIZER_FILE)
    for genre, mood in pairs:
        if genre not in genres:
            raise MoodstreamError(f"unknown genre {genre!r}; valid genres: {', '.join(genres)}")
        if mood not in moods:
            raise MoodstreamError(f"unknown mood {mood!r}; valid moods: {', '.join(moods)}")
    return directory


def check_seed(seed: int) -> int:
    if seed < 0:
        raise MoodstreamError(f"--seed {seed} must be 0 or more")
    return seed


class Terminate(Exception):
    """SIGTERM: leave like Ctrl-C, through every `finally`."""


def raise_terminate(signum, frame):
    raise Terminate()


class Status:
    """One status line on stderr (rewritten in place on a terminal; a log line per bar with -v otherwise),
    plus notes; never raises (a closed stderr must not stop a shutdown). Called from the news thread."""

    def __init__(self, total_bars: int | None, stream=None):
        self.stream = stream or sys.stderr
        self.total = total_bars
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.lock = threading.Lock()
        self.line = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def bar(self, number: int, genre: str, mood: str, bpm: float) -> None:
        of = f"/{self.total}" if self.total else ""
        line = f"bar {number + 1}{of} · {genre} · {mood} · {bpm:.0f} bpm"
        with self.lock:
            if self.tty:
                self._write("\r" + line.ljust(len(self.line)))
                self.line = line
            else:
                log.info("%s", line)  # with -v: one line per bar in a log

    def say(self, text: str) -> None:
        with self.lock:
            self._write(("\n" if self.tty and self.line else "") + text + "\n")
            self.line = ""

    def close(self) -> None:
        with self.lock:
            if self.tty and self.line:
                self._write("\n")
            self.line = ""


def run_soak_command(args: argparse.Namespace, controls) -> int:
    """`--soak-hours H`: the soak of `streamer.soak` on the chosen model; a summary on stdout."""
    import json
    import math

    from tqdm import tqdm

    from streamer.engine import load_model
    from streamer.outputs.recorder import check_writable
    from streamer.soak import SoakConfig, run_soak

    config = SoakConfig(hours=args.soak_hours, seed=args.seed, controls=controls, record=args.record,
                        lookahead_bars=args.lookahead)
    if args.record is not None:
        check_writable(args.record, "recording")
    model_dir = check_model_conditions(args.model, [(args.genre, args.mood)])
    model, vocab, _ = load_model(model_dir, args.device)
    progress = tqdm(total=round(config.seconds), unit="s", desc="soak (simulated)", file=sys.stderr,
                    dynamic_ncols=True)

    def advance(simulated_s: float) -> None:
        try:
            progress.update(max(0, min(round(simulated_s), progress.total) - progress.n))
        except (OSError, ValueError):  # stderr went away: the soak goes on
            pass

    previous = signal.signal(signal.SIGTERM, raise_terminate)
    try:
        report = run_soak(model, vocab, config, progress=advance)
    except Terminate:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            progress.close()
        except (OSError, ValueError):
            pass
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                          for k, v in report.to_dict().items()}))
    else:
        print("\n".join(report.lines()))
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise MoodstreamError(f"soak failed: {report.problems[0]}{more}")
    if not args.json:
        print("soak passed: every note closed, every message in range, no error"
              + (", memory bounded" if report.judges_memory else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    from streamer.clock import MonotonicClock
    from streamer.engine import (ActionTaken, BarStarted, ControlsChanged, Engine, EngineConfig,
                                 GeneratorFailed, OutputFailed, OutputRecovered, SwitchApplied, Underrun, freeze_heap)
    from streamer.remote import timestamped_recording
    from streamer.outputs import OutputOptions, open_outputs, parse_output_names
    from streamer.outputs.recorder import Recorder, check_writable

    controls = music_controls(args)
    generator = generator_config(args)
    check_seed(args.seed)
    if args.soak_hours is not None:
        return run_soak_command(args, controls)
    if args.json:
        raise MoodstreamError("--json goes with --soak-hours (a stream prints a status line)")
    if args.bars is not None and args.bars < 1:
        raise MoodstreamError(f"--bars {args.bars} must be at least 1")
    names = parse_output_names(args.output)
    if args.record is not None:
        check_writable(args.record, "recording")
    parsed = check_outside(args, args.genre, args.mood)
    model_dir = check_model_conditions(args.model, [(args.genre, args.mood)] + parsed["pairs"])
    check_control_names(parsed, model_dir)
    config = EngineConfig(model_dir=model_dir, device=args.device, lookahead_bars=args.lookahead,
                          max_bars=args.bars, midi_clock=not args.no_clock, external_sync=args.sync == "external",
                          rt_priority=args.rt_priority, generator=generator)
    stop_asked = threading.Event()
    options = OutputOptions(soundfont=args.soundfont, driver=args.driver, port=args.port,
                            midi_clock=not args.no_clock)

    outputs, problems = open_outputs(names, options)
    if args.record is not None:
        outputs.append(Recorder(args.record))
    if not outputs:
        raise MoodstreamError(problems[0] if len(problems) == 1 else "no output could be opened: " + "; ".join(problems))
    status = Status(args.bars)
    for problem in problems:
        status.say(f"moodstream: warning: {problem} (going on with the other outputs)")

    def on_news(news):
        if isinstance(news, BarStarted):
            status.bar(news.bar_number, news.conditions.genre, news.conditions.mood, news.tempo_qpm)
        elif isinstance(news, Underrun):
            status.say(f"moodstream: warning: underrun at bar {news.bar_number}: the model is slower than real time")
        elif isinstance(news, OutputFailed):
            status.say(f"moodstream: warning: output {news.name} failed: {news.message}")
        elif isinstance(news, OutputRecovered):
            status.say(f"moodstream: output {news.name} works again from bar {news.bar_number}")
        elif isinstance(news, SwitchApplied):
            status.say(f"bar {news.bar_number}: {news.conditions.genre} · {news.conditions.mood}")
        elif isinstance(news, GeneratorFailed):
            then = "the stream stops" if news.fatal else "notes silenced, resuming from the last good bar"
            status.say(f"moodstream: warning: {news.message} ({then})")
        elif isinstance(news, ControlsChanged) and news.source != "cues":
            status.say(f"{news.source}: {news.describe()}")
        elif isinstance(news, ActionTaken):
            status.say(f"{news.source}: {news.action}{' ' + news.detail if news.detail else ''}")
            if news.action == "stop":
                stop_asked.set()

    engine = None
    outside = None
    sync = None
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, raise_terminate), (signal.SIGINT, signal.default_int_handler))}
    try:
        engine = Engine(config, outputs, MonotonicClock(), controls, on_news=on_news, output_options=options)
        outside = open_outside(engine, args, parsed, status.say, record_path=timestamped_recording(first=args.record))
        freeze_heap()
        if config.external_sync:
            from streamer.outputs.port import SyncInput

            sync = SyncInput(engine.timebase)
            status.say(f"waiting for MIDI clock and Start on {sync.port_name!r} ({sync.api})")
        engine.start()
        while not engine.wait(0.2):
            if stop_asked.is_set():
                status.say("moodstream: stopping (all notes off)")
                break
    except (KeyboardInterrupt, Terminate):
        status.say("moodstream: stopping (all notes off)")
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if outside is not None:
                outside.close()
            if engine is not None:
                engine.stop()
            else:  # the stream never started: leave no file behind
                for output in outputs:
                    output.discard()
        finally:
            if outside is not None:
                outside.close_events()
            if sync is not None:
                sync.close()
            status.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if engine is None:
        status.say("moodstream: interrupted before the stream started")
        return 130
    if engine.error:
        raise MoodstreamError(engine.error)
    if args.record is not None:
        status.say(f"recorded {args.record}")
    return 0
