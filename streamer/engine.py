"""The streaming engine: generator thread + scheduler thread + outputs behind one facade (CLI and TUI).

    engine = Engine(EngineConfig(model_dir=...), outputs, clock=MonotonicClock(), on_news=callback)
    engine.start()                                  # returns at once; music starts when bar 0 is written
    at_bar = engine.set_controls(genre="jazz", mood="calm")   # or set_controls(Controls(...)); → 42
    engine.stats()        # EngineStats (also a mapping): tokens_per_s, realtime_factor, lookahead_bars,
                          # underruns, late_messages, late_p99_ms, switch_latency_ms, outputs {name: status},
                          # realtime_priority (the scheduler thread's: fifo | nice | none)
    engine.position_beats(); engine.panic(); engine.set_midi_clock(False)
    engine.set_outputs("fluidsynth,port"); engine.set_recording("take.mid"); engine.set_recording(None)
    engine.stop()                                   # all notes off, outputs closed, recording written; < 2 s

News go out through one fan-out, `engine.news` (a `streamer.news.NewsHub`: `engine.news.subscribe(fn, *types)`;
`on_news=fn` subscribes one listener to everything), in order on the hub's own thread, so a slow listener never
delays playback: `BarQueued`, `BarsDiscarded`, `SwitchPending`, `BarStarted`, `BarNotes`, `SwitchApplied`,
`SwitchSounded`, `Underrun`, `OutputFailed`, `OutputRecovered`, `GeneratorFailed`, `PlaybackStopped`,
`ControlsChanged` (what changed and from where), `ActionTaken`, `ControlError` (frozen dataclasses, importable from
here). `switch_at` (`SwitchAt`: beat, bar or phrase:N) says where a live switch lands; with beat, at the next whole
beat of the bar playing that the generator can reach (the rest of that bar is written again), else as with bar. A
genre/mood change with bar takes effect at the next bar line of playback when the generator has time to write the
start of that bar (its first note) before the line (a bar may start playing while its later notes are still being
written: `streamer.barqueue.LiveBar`) and the rest before it ends; else at the one after. Bars queued past that
point are thrown away. `streamer.switching` follows a switch's path from here to the model, step by step.
Other controls apply from the next bar written; bpm from the next bar line played.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from model.errors import MoodstreamError
from streamer import switching
from streamer.barqueue import BarQueue
from streamer.clock import Clock, ExternalTimebase, MonotonicClock
from streamer.controls import Controls, SwitchAt
from streamer.generator import Generator, GeneratorConfig, GeneratorStats
from streamer.news import (ActionTaken, BarNotes, BarQueued, BarStarted, BarsDiscarded, ControlError, ControlsChanged,
                           GeneratorFailed, NewsHub, OutputFailed, OutputRecovered, PlaybackStopped, SwitchApplied,
                           SwitchPending, SwitchSounded, Underrun)
from streamer.outputs import OutputOptions, open_outputs, parse_output_names
from streamer.outputs.base import Output
from streamer.rt import RT_MODES
from streamer.scheduler import Scheduler, SchedulerConfig, SchedulerStats

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineConfig", "EngineStats", "Switch", "SwitchPending", "freeze_heap", "BarQueued",
           "BarsDiscarded", "BarStarted", "BarNotes", "SwitchApplied", "SwitchSounded", "Underrun", "OutputFailed",
           "OutputRecovered", "GeneratorFailed", "PlaybackStopped", "load_model", "ControlsChanged", "ActionTaken",
           "ControlError", "SwitchAt"]

SWITCH_INTERVAL_S = 0.0005  # the GIL changes hands at least this often: the scheduler wakes on time


@dataclass(frozen=True)
class EngineConfig:
    model_dir: Optional[Path] = None  # checkpoint directory; None = the bundled default model
    device: Optional[str] = None  # None: CUDA when present, else CPU
    lookahead_bars: int = 2  # bars written ahead of playback (the queue size): one bar + a margin
    realtime: bool = True  # False: each bar line waits for its bar (renders on the fake clock; no underruns)
    max_bars: Optional[int] = None  # stop after this many bars
    midi_clock: bool = True  # MIDI clock on outputs that take it (internal sync)
    external_sync: bool = False  # follow MIDI clock from a SyncInput instead of the model's tempo
    guidance: bool = False  # run the unconditioned row from the start (else: from the first guidance ≠ 1)
    start_delay_s: float = 0.1  # bar 0 starts this long after it is written
    switch_margin: float = 1.5  # a switch makes the next bar line if the generator can keep ahead with this margin
    rt_priority: str = "auto"  # scheduler thread on the real clock: "auto" = SCHED_FIFO where permitted, "off"
    switch_at: SwitchAt = SwitchAt()  # where a live genre/mood switch lands: the next beat, bar line, or phrase:N
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # seed, bar limits, …

    def __post_init__(self):
        if not 1 <= self.lookahead_bars <= 64:
            raise MoodstreamError(f"lookahead = {self.lookahead_bars!r} bars is out of range: use 1 to 64")
        if self.max_bars is not None and self.max_bars < 1:
            raise MoodstreamError(f"bars = {self.max_bars!r} must be at least 1")
        if self.switch_margin < 0:
            raise ValueError(f"switch_margin = {self.switch_margin!r} must be ≥ 0")
        if self.rt_priority not in RT_MODES:
            raise MoodstreamError(f"--rt-priority {self.rt_priority!r}: use one of {', '.join(RT_MODES)}")


@dataclass(frozen=True)
class Switch:
    """What `set_controls` decided: `controls` govern bars from generation number `seq`, expected to
    sound from playback bar `at_bar` (a silent underrun bar in between would push it back); a beat switch
    from `at_beat` beats after that bar's line (None: from the line)."""

    controls: Controls
    seq: int
    at_bar: int
    switch_id: int
    at_beat: Optional[int] = None


@dataclass(frozen=True)
class EngineStats(Mapping):
    """A snapshot; also readable as a mapping of its fields (`stats["underruns"]`, `stats.get(...)`)."""

    tokens_per_s: float
    realtime_factor: float  # bar duration ÷ time to write it (recent bars); > 1 keeps up
    lookahead_bars: int  # bars written and waiting
    underruns: int
    late_messages: int  # sent more than 5 ms after their due time
    send_error_p50_ms: float
    late_p99_ms: float  # p99 of (sent − due) over recent messages
    switch_latency_ms: tuple[float, ...]  # recent switches: control change → first new note
    bar_number: int
    position_beats: float
    tempo_qpm: float
    outputs: dict[str, str]  # name → ok / closed / failed: why
    realtime_priority: str  # the scheduler thread's: fifo (SCHED_FIFO) / nice (−10) / none
    generator: GeneratorStats
    scheduler: SchedulerStats

    def __getitem__(self, key: str):
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict:
        return asdict(self)


def freeze_heap() -> int:
    """Collect once, then move every object alive now (the loaded model, the libraries, the engine) out of
    the cyclic garbage collector's reach (`gc.freeze`); returns how many are frozen. A full collection holds
    the GIL, so it delays the scheduler's sends: with the default model loaded it takes ~95 ms, and ~14 ms
    once this was done before the stream started (fake-clock stream, 150 bars). For processes that play
    (play, stream, the bench's live run): objects frozen here are never collected as cycles."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def load_model(model_dir: Optional[str | Path], device: Optional[str] = None):
    """(model ready for decoding, vocab, meta) from a checkpoint directory (None: the default model)."""
    from model.checkpoint import load_checkpoint
    from model.engine import default_device, prepare_for_decoding
    from model.paths import resolve_model_dir

    directory = resolve_model_dir(model_dir)
    device = device or default_device()
    model, vocab, meta = load_checkpoint(directory, device="cpu")
    return prepare_for_decoding(model, device), vocab, meta


class Engine:
    """One live stream (see the module docstring). Not restartable: make a new Engine after `stop()`."""

    def __init__(self, config: EngineConfig, outputs: Sequence[Output] = (), clock: Optional[Clock] = None,
                 controls: Controls = Controls(), on_news: Optional[Callable[[object], None]] = None,
                 model=None, vocab=None, output_options: OutputOptions = OutputOptions()):
        self.config = config
        self.output_options = output_options
        self.last_switch: Optional[Switch] = None
        self.clock = clock or MonotonicClock()
        if model is None:
            model, vocab, _ = load_model(config.model_dir, config.device)
        self.vocab = vocab
        controls.check(vocab)
        self.news = NewsHub(self.clock)
        if on_news is not None:
            self.news.subscribe(on_news)
        self.switch_at: SwitchAt = config.switch_at
        self._pinned_bpm: dict[int, Optional[float]] = {}  # seq → tempo of a change pinned to that bar
        self.news.subscribe(self._apply_pinned_bpm, BarStarted, sync=True)
        self.error: Optional[str] = None  # a fatal problem (generator gave up)
        self.queue = BarQueue(config.lookahead_bars)
        self.timebase = ExternalTimebase(self.clock) if config.external_sync else None
        self.scheduler = Scheduler(
            self.queue, outputs, self.clock,
            SchedulerConfig(wait_for_bars=not config.realtime, start_delay_s=config.start_delay_s,
                            midi_clock=config.midi_clock, max_bars=config.max_bars,
                            rt_priority=config.rt_priority),
            timebase=self.timebase, notify=self._post)
        self.generator = Generator(model, vocab, self.queue, controls, self.clock, config.generator,
                                   notify=self._post, on_failure=lambda err: self.scheduler.panic(),
                                   guidance=config.guidance)
        self.scheduler.set_bpm(controls.bpm)
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("an Engine starts once")
            self._started = True
        if self.config.realtime:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.news.start()
        self.generator.start()
        self.scheduler.start()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Block until playback ends by itself (max_bars, a fatal error); True if it has."""
        return self.scheduler.finished.wait(timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop both threads, silence and close every output (the recording is written). Idempotent.
        Raises MoodstreamError if an output could not be closed cleanly (e.g. an unwritable recording)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.generator.stop()
        self.scheduler.stop()
        if self._started:
            if not self.scheduler.join(timeout_s):
                log.error("the scheduler did not stop within %.1f s", timeout_s)
            if not self.generator.join(timeout_s):
                log.error("the generator did not stop within %.1f s (it is a daemon thread)", timeout_s)
        problems = []
        for output in self.scheduler.outputs + self.scheduler.broken_outputs:
            try:
                output.close()
            except Exception as err:
                problems.append(str(err))
        if isinstance(self.timebase, ExternalTimebase):
            self.timebase.on_stop()
        self.news.close(timeout_s)
        if problems:
            raise MoodstreamError("; ".join(problems))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- controls --------------------------------------------------------------------------------
    @property
    def controls(self) -> Controls:
        """The controls last asked for (they may not govern the bar playing yet)."""
        return self.generator.controls

    def set_controls(self, controls: Optional[Controls] = None, at_bar: Optional[int] = None, source: str = "api",
                     **changes) -> int:
        """Change the controls (`controls`, or the current ones with `changes`: genre=, mood=, temperature=,
        top_p=, top_k=, guidance_w=, bpm=). Validated (MoodstreamError). `at_bar` pins a genre/mood change
        to an exact bar — for renders, where no underrun shifts the bar numbers; else it lands where
        `switch_at` says. `source` names who asked (news `ControlsChanged`). Returns the playback bar
        from which the new controls are expected to sound; `last_switch` holds the details."""
        previous = self.controls
        new = (controls or previous).but(**changes) if changes else (controls or previous)
        new.check(self.vocab)
        changed = new.conditions != previous.conditions
        cut = None
        if changed and at_bar is None and self.switch_at.beat and self.config.realtime:
            cut = self._cut_switch(new)
        if cut is not None:
            entry, at, at_beat = cut
            seq = entry.from_seq
            self.scheduler.set_bpm(new.bpm)
        else:
            at_beat = None
            if changed and at_bar is None:
                at_bar = self._quantised_seq()
            skip = 0
            if changed and at_bar is None and self.config.realtime:
                left_s = self.scheduler.seconds_to_next_bar()
                if left_s is not None and not self._switch_fits(left_s):
                    skip = 1  # too close to the bar line: the bar after it
            entry = self.generator.request(new, skip_bars=skip, at_seq=at_bar)
            seq = entry.from_seq
            if at_bar is not None and seq > self.queue.next_to_play():
                if new.bpm != previous.bpm:
                    with self._lock:  # the tempo changes at that bar's line (`_apply_pinned_bpm`), not the next one
                        self._pinned_bpm[seq] = new.bpm
            else:
                self.scheduler.set_bpm(new.bpm)
            at = self._bar_of_seq(seq)
        if changed:
            self._post(SwitchPending(new, at, entry.switch_id, at_beat))
        self.last_switch = Switch(new, seq, at, entry.switch_id, at_beat)
        if new != previous:
            self._post(ControlsChanged(previous, new, source, at if changed else None))
        return at

    def _apply_pinned_bpm(self, news: BarStarted) -> None:
        """Sync news listener (the scheduler's thread): a tempo pinned to the next bar goes to the scheduler now,
        which plays it from the next bar line."""
        if not self._pinned_bpm:
            return
        with self._lock:
            due = [seq for seq in self._pinned_bpm if seq <= news.seq + 1]
            bpm = [self._pinned_bpm.pop(seq) for seq in sorted(due)]
        if bpm:
            self.scheduler.set_bpm(bpm[-1])

    def seq_of_bar(self, bar_number: int) -> int:
        """The generation bar (seq) expected to sound at playback bar `bar_number` (inverse of `_bar_of_seq`;
        equal before playback starts and in renders, where no underrun shifts the numbers)."""
        line = self.scheduler.bar_line()
        if line is None:
            return bar_number
        number, started = line
        return started + (bar_number - number)

    def set_switch_at(self, switch_at: SwitchAt) -> None:
        """Where the next live genre/mood switches land (beat, bar, phrase:N)."""
        self.switch_at = switch_at

    def _bar_of_seq(self, seq: int) -> int:
        """The playback bar number generation bar `seq` is expected to sound at (the scheduler's bar number and
        newest started seq, read as one: `Scheduler.bar_line`)."""
        line = self.scheduler.bar_line()
        if line is None:
            return seq
        number, started = line
        return number + (seq - started)

    def _cut_switch(self, new: Controls):
        """A beat switch: (schedule entry, playback bar, beat) where it cuts the bar playing
        (`switching.beat_landing` with the recent bars' timings, then `Generator.request_cut`); None when no
        beat of that bar is left in time, before playback, in a silent bar, or when the bar is still being
        written — the switch then lands as a bar switch."""
        playing = self.scheduler.playing_bar()
        if playing is None:
            return None
        number, seq, now_beats, length_beats, beat_s = playing
        g = self.generator
        beat = switching.beat_landing(now_beats, length_beats, beat_s, g.estimated_head_s(), g.estimated_bar_s(),
                                      self.config.switch_margin)
        if beat is None:
            return None
        entry = g.request_cut(new, seq, beat)
        return None if entry is None else (entry, number, beat)

    def _quantised_seq(self) -> Optional[int]:
        """With `switch_at` phrase:N, the generation bar a switch made now starts at (`switching.landing_seq`,
        from the earliest it could make: `_switch_fits`). None with `bar` (the generator picks the next bar it
        can)."""
        if self.switch_at.bars == 1:
            return None
        earliest = self.queue.next_to_play()
        if self.config.realtime and self.scheduler.started.is_set():
            left_s = self.scheduler.seconds_to_next_bar()
            if left_s is not None and not self._switch_fits(left_s):
                earliest += 1
        return switching.landing_seq(earliest, self._bar_of_seq, self.switch_at)

    def _switch_fits(self, left_s: float) -> bool:
        """`switching.fits` with the recent bars' timings (`Generator.estimated_head_s`, `estimated_bar_s`)."""
        g = self.generator
        return switching.fits(left_s, g.estimated_head_s(), g.estimated_bar_s(), self.scheduler.bar_seconds(),
                              self.config.switch_margin)

    def panic(self) -> None:
        self.scheduler.panic()

    def post(self, news: object) -> None:
        """Put news of our own on the fan-out (ActionTaken, ControlError from a remote control)."""
        self.news.post(news)

    def set_midi_clock(self, on: bool) -> None:
        self.scheduler.set_midi_clock(on)

    # ---- outputs ---------------------------------------------------------------------------------
    def add_output(self, output: Output) -> None:
        self.scheduler.add_output(output)

    def remove_output(self, name: str) -> bool:
        """Silence, detach and close the output called `name`; False if there is none."""
        output = self.scheduler.remove_output(name)
        if output is None:
            return False
        output.close()
        return True

    def set_outputs(self, names: str | Iterable[str]) -> list[str]:
        """Play to exactly these outputs ("fluidsynth,port", "null", "none", ["port"]); the recorder is
        kept. Opens what is missing (with `output_options`), closes the rest. Returns one line per output
        that could not be opened (the others go on); MoodstreamError for unknown names."""
        wanted = parse_output_names(names)
        for output in self.scheduler.broken_outputs:  # a dead one is opened afresh; one reconnecting is kept
            if not output.can_reconnect or output.name not in wanted:
                self.remove_output(output.name)
        current = [o.name for o in self.outputs + self.scheduler.broken_outputs if o.name != "recorder"]
        for name in current:
            if name not in wanted:
                self.remove_output(name)
        opened, problems = open_outputs([n for n in wanted if n not in current], self.output_options)
        for output in opened:
            self.add_output(output)
        return problems

    def set_recording(self, path: Optional[str | Path]) -> Optional[Path]:
        """Start recording into `path` (.mid) from the current bar line, or stop (None: the file is
        written). Returns the file's path."""
        return self.start_recording(path) if path is not None else self.stop_recording()

    def position_beats(self) -> float:
        """Where playback is now, in beats since the stream began (for a playhead)."""
        return self.scheduler.position_beats()

    def start_recording(self, path: str | Path) -> Path:
        """Record from the current bar line into `path` (.mid), until `stop_recording` or `stop`."""
        from streamer.outputs.recorder import Recorder

        if any(o.name == Recorder.name for o in self.scheduler.outputs):
            raise MoodstreamError("already recording: stop the current recording first")
        recorder = Recorder(path)
        self.add_output(recorder)
        return recorder.path

    def stop_recording(self) -> Optional[Path]:
        from streamer.outputs.recorder import Recorder

        found = [o for o in self.scheduler.outputs if o.name == Recorder.name]
        if not found:
            return None
        self.remove_output(Recorder.name)
        return found[0].path

    @property
    def outputs(self) -> list[Output]:
        return self.scheduler.outputs

    # ---- news and stats --------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        g, s = self.generator.stats(), self.scheduler.stats()
        return EngineStats(
            tokens_per_s=g.tokens_per_s, realtime_factor=g.real_time_factor, lookahead_bars=len(self.queue),
            underruns=s.underruns, late_messages=s.late_messages, send_error_p50_ms=s.send_error_p50_ms,
            late_p99_ms=s.send_error_p99_ms, switch_latency_ms=s.switch_latency_ms, bar_number=s.bar_number,
            position_beats=s.position_beats, tempo_qpm=s.tempo_qpm, outputs=s.outputs,
            realtime_priority=s.realtime_priority, generator=g, scheduler=s)

    def _post(self, news: object) -> None:
        """Called from the real-time threads: never blocks."""
        if isinstance(news, GeneratorFailed) and news.fatal:
            self.error = news.message
            self.scheduler.stop()
        self.news.post(news)
