"""`moodstream play`: the terminal instrument (what `make run` starts). Same flags and meanings as
`moodstream stream` where they overlap. Outputs that cannot open (no audio device, no JACK/ALSA, no
soundfont) are named on screen and the stream goes on with the others — with `null` when none opens.
While the UI owns the terminal, what C libraries print and every log record go to a log file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from model.errors import MoodstreamError
from streamer.commands.outside import (add_cue_args, add_events_arg, add_live_args, check_control_names,
                                       check_outside, open_outside)
from streamer.commands.stream import (add_music_args, add_rt_priority_arg, check_model_conditions, check_seed,
                                      generator_config, music_controls)

log = logging.getLogger(__name__)

DEFAULT_LOG = Path("~/.cache/moodstream/play.log")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "play", help="the terminal instrument: stream music and switch genre and mood live",
        description="Stream music in a terminal UI: pick genre and mood (keys, arrows, mouse), move "
                    "temperature, top-p, guidance and tempo live, watch the piano roll. Press ? for the keys.")
    add_music_args(p)
    p.add_argument("--output", default="fluidsynth",
                   help="where the music goes: fluidsynth, port, null, or several separated by commas "
                        "(default: fluidsynth; switch live with o)")
    p.add_argument("--record", type=Path, help="record from the start into this .mid file (toggle with r)")
    p.add_argument("--port", help="send to this existing MIDI port instead of a virtual port 'moodstream'")
    p.add_argument("--no-clock", action="store_true", help="do not send MIDI clock on the port (toggle with c)")
    p.add_argument("--lookahead", type=int, default=2, help="bars written ahead of playback, 1-64 (default 2)")
    p.add_argument("--driver", default="auto", help="FluidSynth audio driver (default: auto = pipewire, "
                                                     "pulseaudio, alsa, jack)")
    add_rt_priority_arg(p)
    add_live_args(p)
    add_cue_args(p)
    add_events_arg(p)
    p.add_argument("--log", type=Path, default=DEFAULT_LOG,
                   help=f"where log records and library messages go while the UI runs (default: {DEFAULT_LOG})")
    p.set_defaults(func=run)


@contextmanager
def native_stderr_to(path: Path):
    """Point file descriptor 2 at `path` (what FluidSynth, JACK and ALSA print from C would tear the
    screen) while `sys.stderr` and `sys.__stderr__` — where Textual draws — write to the terminal."""
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
    saved = sys.stderr, sys.__stderr__
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = sys.__stderr__ = terminal
    try:
        yield terminal
    finally:
        terminal.flush()
        os.dup2(terminal_fd, 2)
        sys.stderr, sys.__stderr__ = saved
        terminal.close()


@contextmanager
def logging_to(path: Path, ui_handler: logging.Handler | None = None):
    """Send every log record to `path` (tracebacks included) and, from WARNING up, to `ui_handler`,
    instead of the terminal the UI draws on."""
    root = logging.getLogger()
    saved = root.handlers[:]
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [file_handler] + ([ui_handler] if ui_handler is not None else [])
    try:
        yield
    finally:
        root.handlers = saved
        file_handler.close()


def open_play_outputs(names, options, record: Path | None):
    """The outputs to start with and one line per problem. Never empty: with nothing else, `null`."""
    from streamer.outputs import open_outputs
    from streamer.outputs.null import NullOutput
    from streamer.outputs.recorder import Recorder

    outputs, problems = open_outputs(names, options)
    if not outputs and names:
        outputs.append(NullOutput())
        problems.append("no output could be opened: streaming to null (press o to try others)")
    if record is not None:
        outputs.append(Recorder(record))
    return outputs, problems


def run(args: argparse.Namespace) -> int:
    from streamer.clock import MonotonicClock
    from streamer.engine import Engine, EngineConfig, freeze_heap
    from streamer.outputs import OutputOptions, parse_output_names
    from streamer.outputs.recorder import check_writable
    from streamer.remote import timestamped_recording
    from streamer.tui import UiLogHandler, create_app

    controls = music_controls(args)
    generator = generator_config(args)
    check_seed(args.seed)
    names = parse_output_names(args.output)
    if args.record is not None:
        check_writable(args.record, "recording")
    parsed = check_outside(args, args.genre, args.mood)
    model_dir = check_model_conditions(args.model, [(args.genre, args.mood)] + parsed["pairs"])
    check_control_names(parsed, model_dir)
    log_path = args.log.expanduser()
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
    except OSError as err:
        raise MoodstreamError(f"log file {log_path}: {err.strerror}; choose another with --log FILE") from err
    config = EngineConfig(model_dir=model_dir, device=args.device, lookahead_bars=args.lookahead,
                          midi_clock=not args.no_clock, rt_priority=args.rt_priority, generator=generator)
    options = OutputOptions(soundfont=args.soundfont, driver=args.driver, port=args.port,
                            midi_clock=not args.no_clock)

    print(f"moodstream: loading the model, opening {args.output} …", file=sys.stderr, flush=True)
    app = None

    def on_news(news) -> None:  # the engine's news thread: hand over, never block
        if app is not None:
            app.post_news(news)

    ui_log = UiLogHandler()
    said: list[str] = []
    outside = None
    with native_stderr_to(log_path), logging_to(log_path, ui_log):
        outputs, problems = open_play_outputs(names, options, args.record)
        try:
            engine = Engine(config, outputs, MonotonicClock(), controls, on_news=on_news, output_options=options)
            outside = open_outside(engine, args, parsed, said.append,
                                   record_path=timestamped_recording(first=args.record))
            freeze_heap()
        except BaseException:
            for output in outputs:  # the stream never started: leave no file behind
                output.discard()
            raise
        problems = problems + [line.removeprefix("moodstream: ") for line in said]
        app = create_app(engine, engine.vocab.genres, engine.vocab.moods, controls, seed=args.seed,
                         output_request=args.output, record_path=args.record, midi_clock=not args.no_clock,
                         notices=problems)
        ui_log.app = app
        previous = {sig: signal.signal(sig, lambda signum, frame: app.exit())  # quit cleanly (Ctrl+C is a key)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            app.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            ui_log.app = None
            if outside is not None:
                outside.close()
            app.shutdown()  # idempotent: all notes off, outputs closed, recording written
            if outside is not None:
                outside.close_events()
    if app.crash is not None:
        raise MoodstreamError(f"the terminal UI failed: {type(app.crash).__name__}: {app.crash} "
                              f"(details in {log_path})")
    if app.stop_error:
        raise MoodstreamError(app.stop_error)
    if engine.error:
        raise MoodstreamError(f"{engine.error} (details in {log_path})")
    for path in app.recordings:
        print(f"recorded {path}", file=sys.stderr)
    return 0
