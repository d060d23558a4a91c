"""Soak: hours of streaming on the fake clock, switching genre, mood and sampling at random moments, with
every message checked as it is sent: each note_on gets its note_off (no note outlives the longest allowed
note), every value inside its MIDI range, no exception or error log, bounded memory, many cache re-anchors.

    report = run_soak(model, vocab, SoakConfig(hours=1.0, seed=0), progress=callback)
    report.problems      # () when every check passed; one line each otherwise
    report.to_dict()     # figures: bars, switches, re-anchors, rollbacks, rss_growth_mb_per_hour, ...

`moodstream stream --soak-hours H` runs it on any model; tests/test_soak.py runs the hour (slow) and
tests/test_reliability_soak.py a few simulated minutes.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import mido

from model.errors import MoodstreamError
from streamer.bars import BarConfig
from streamer.controls import BPM_RANGE, Controls
from streamer.outputs.base import Output

log = logging.getLogger(__name__)

POLL_S = 0.0005  # how often (real seconds) the switch driver looks at the fake clock
RSS_SAMPLE_S = 60.0  # simulated seconds between memory samples
MIN_HOURS_FOR_MEMORY = 0.5  # shorter runs do not judge memory growth per hour or re-anchors per hour


@dataclass(frozen=True)
class SoakConfig:
    hours: float = 1.0  # simulated hours of music
    seed: int = 0  # drives the music and the switch moments
    switch_every_s: float = 8.0  # mean simulated seconds between switches (random, exponential gaps)
    controls: Controls = Controls(bpm=120.0)  # where the run starts (bpm None: the model's tempo)
    lookahead_bars: int = 2
    warmup_fraction: float = 0.1  # memory growth is measured from this share of the run on
    max_rss_growth_mb_per_hour: float = 5.0
    min_reanchors_per_hour: float = 10.0
    record: Optional[Path] = None  # also record into this .mid file and check the file
    bar: BarConfig = field(default_factory=BarConfig)

    def __post_init__(self):
        if not isinstance(self.hours, (int, float)) or math.isnan(self.hours) or not 0 < self.hours <= 1000:
            raise MoodstreamError(f"soak hours = {self.hours!r} is out of range: use a number above 0 and at most 1000")
        if not self.switch_every_s > 0:
            raise MoodstreamError(f"switch_every_s = {self.switch_every_s!r} must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction = {self.warmup_fraction!r} must be in [0, 1)")

    @property
    def seconds(self) -> float:
        return self.hours * 3600.0


# ---- the checking output ------------------------------------------------------------------------------
_RANGES = {"channel": 15, "note": 127, "velocity": 127, "program": 127, "control": 127, "value": 127}
_EXPECTED = {"note_on", "note_off", "program_change", "control_change", "set_tempo", "clock", "start", "stop",
             "continue", "songpos"}


class NoteLedger(Output):
    """Checks every message as it arrives, in constant memory: MIDI ranges, beat times that never go back,
    each note_on closed by a note_off (a retrigger must be preceded by one), no note held longer than
    `max_note_beats`. `problems` keeps the first few violations; `counts` what went by."""

    name = "ledger"
    wants_meta = True
    wants_clock = True

    def __init__(self, max_note_beats: float, keep: int = 20):
        super().__init__()
        self.max_note_beats = max_note_beats
        self._keep = keep
        self._lock = threading.Lock()
        self.sounding: dict[tuple[int, int], float] = {}  # (channel, note) → beat of its note_on
        self.problems: list[str] = []
        self.violations = 0
        self.counts = {"note_on": 0, "note_off": 0, "panics": 0, "messages": 0, "clock": 0}
        self.longest_note_beats = 0.0
        self.last_beat = -math.inf

    def _problem(self, text: str) -> None:
        self.violations += 1
        if len(self.problems) < self._keep:
            self.problems.append(text)

    def _send(self, msg) -> None:
        beat = float(msg.time)
        with self._lock:
            self.counts["messages"] += 1
            kind = msg.type
            if kind not in _EXPECTED:
                self._problem(f"unexpected message {msg!r}")
            for attr, high in _RANGES.items():
                value = getattr(msg, attr, None)
                if value is not None and not 0 <= value <= high:
                    self._problem(f"{attr} {value} outside 0..{high}: {msg!r}")
            if beat < self.last_beat - 1e-9:
                self._problem(f"time went back from beat {self.last_beat:.4f} to {beat:.4f}: {msg!r}")
            self.last_beat = max(self.last_beat, beat)
            if kind == "clock":
                self.counts["clock"] += 1
            elif kind == "note_on" and msg.velocity > 0:
                self.counts["note_on"] += 1
                key = (msg.channel, msg.note)
                if key in self.sounding:
                    self._problem(f"note_on at beat {beat:.3f} on a sounding key {key} (no note_off first)")
                self.sounding[key] = beat
            elif kind == "note_off" or (kind == "note_on" and msg.velocity == 0):
                self.counts["note_off"] += 1
                started = self.sounding.pop((msg.channel, msg.note), None)
                if started is not None:
                    held = beat - started
                    self.longest_note_beats = max(self.longest_note_beats, held)
                    if held > self.max_note_beats + 1e-6:
                        self._problem(f"note {(msg.channel, msg.note)} held {held:.3f} beats "
                                      f"(longest allowed {self.max_note_beats:g})")

    def panic(self) -> None:
        """The scheduler's panic (after the note_offs it sends): counted, nothing to check."""
        with self._lock:
            self.counts["panics"] += 1

    def stuck(self) -> list[tuple[int, int]]:
        """Keys whose note_on has had no note_off yet."""
        with self._lock:
            return sorted(self.sounding)


def midi_file_problems(path: Path) -> tuple[int, list[str]]:
    """(note_ons in the file, problems): every note_on of a recorded .mid closed, values in range."""
    problems, sounding, count = [], set(), 0
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        return 0, [f"recording {path} unreadable: {err}"]
    for track in midi.tracks:
        for msg in track:
            if msg.type == "note_on" and msg.velocity > 0:
                count += 1
                sounding.add((msg.channel, msg.note))
            elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
                sounding.discard((msg.channel, msg.note))
    if sounding:
        problems.append(f"recording {path}: {len(sounding)} note(s) never closed: {sorted(sounding)[:5]}")
    return count, problems


# ---- the report ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoakReport:
    simulated_s: float
    wall_s: float
    bars_played: int
    bars_written: int
    tokens: int
    switches: int  # genre/mood changes made
    control_changes: int  # every set_controls call (sampling and tempo too)
    reanchors: int
    rollbacks: int
    discarded_bars: int
    note_ons: int
    note_offs: int
    messages: int
    longest_note_beats: float
    stuck_notes: int  # note_ons never closed at the end
    violations: int  # message checks that failed
    generator_failures: int
    output_failures: int
    error_logs: int
    underruns: int
    rss_start_mb: float
    rss_warm_mb: float
    rss_end_mb: float
    rss_growth_mb_per_hour: float  # least-squares slope of the samples after the warm-up (recording excluded)
    gc_objects_warm: int
    gc_objects_end: int
    recorded_note_ons: Optional[int]
    stop_reason: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def judges_memory(self) -> bool:
        """Long enough for the memory and re-anchor checks (shorter runs check the rest)."""
        return self.simulated_s >= MIN_HOURS_FOR_MEMORY * 3600.0 - 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary (the CLI prints it)."""
        hours = self.simulated_s / 3600.0
        return [
            f"soak: {hours:.2f} simulated hours ({self.bars_played} bars, {self.note_ons} notes) in "
            f"{self.wall_s:.0f} s of wall time",
            f"switches: {self.switches} genre/mood, {self.control_changes} control changes in all; "
            f"{self.rollbacks} rollbacks, {self.discarded_bars} queued bars thrown away",
            f"cache re-anchors: {self.reanchors}; tokens written: {self.tokens}",
            f"notes: {self.note_ons} on, {self.note_offs} off, {self.stuck_notes} left sounding; longest "
            f"{self.longest_note_beats:.2f} beats; {self.violations} message check(s) failed",
            f"memory: RSS {self.rss_start_mb:.1f} MB at start, {self.rss_warm_mb:.1f} after warm-up, "
            f"{self.rss_end_mb:.1f} at the end: {self.rss_growth_mb_per_hour:+.2f} MB per hour"
            + ("" if self.judges_memory else f" (too short to judge: run {MIN_HOURS_FOR_MEMORY:g} h or more)"),
            f"errors: {self.generator_failures} generator, {self.output_failures} output, "
            f"{self.error_logs} error log record(s); stopped: {self.stop_reason}",
        ] + ([f"recording: {self.recorded_note_ons} notes, all closed"] if self.recorded_note_ons is not None
             and not any(p.startswith("recording") for p in self.problems) else [])


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (simulated seconds, MB) samples, in MB per hour (NaN with < 2 samples)."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var <= 0:
        return math.nan
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var * 3600.0


class _ErrorLogCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}".splitlines()[0]


def _random_controls(rng: random.Random, current: Controls, vocab, bpm: Optional[float]) -> Controls:
    """A new snapshot: always a new genre or mood; sometimes new sampling settings or tempo too."""
    genre, mood = current.genre, current.mood
    while (genre, mood) == (current.genre, current.mood):
        genre, mood = rng.choice(vocab.genres), rng.choice(vocab.moods)
    changes = {"genre": genre, "mood": mood}
    if rng.random() < 0.3:
        changes["temperature"] = round(rng.uniform(0.5, 1.3), 2)
    if rng.random() < 0.3:
        changes["top_p"] = round(rng.uniform(0.7, 1.0), 2)
    if bpm is not None and rng.random() < 0.2:
        low, high = BPM_RANGE
        changes["bpm"] = float(min(high, max(low, rng.choice((bpm * 0.75, bpm, bpm * 1.25)))))
    return current.but(**changes)


def run_soak(model, vocab, config: SoakConfig = SoakConfig(),
             progress: Optional[Callable[[float], None]] = None) -> SoakReport:
    """Stream `config.hours` of simulated music through the real engine (see the module docstring).
    `progress(simulated seconds)` is called from the driver about once a simulated second."""
    from streamer.clock import FakeClock
    from streamer.engine import Engine, EngineConfig, GeneratorFailed, OutputFailed, PlaybackStopped, Underrun
    from streamer.generator import GeneratorConfig
    from streamer.outputs.recorder import Recorder

    rng = random.Random(config.seed)
    clock = FakeClock()
    ledger = NoteLedger(config.bar.max_note_beats)
    outputs: list[Output] = [ledger]
    recorder = Recorder(config.record) if config.record is not None else None
    if recorder is not None:
        outputs.append(recorder)

    def rss_mb() -> float:
        """RSS without the recording's own events (which grow with it by design)."""
        return _rss_mb() - (recorder.buffer_bytes / 2**20 if recorder is not None else 0.0)
    events = {"failures": 0, "output_failures": 0, "underruns": 0, "stop": "running", "first": []}
    stopped = threading.Event()

    def on_news(news) -> None:
        if isinstance(news, GeneratorFailed):
            events["failures"] += 1
            events["first"].append(f"generator failed: {news.message}")
        elif isinstance(news, OutputFailed):
            events["output_failures"] += 1
            events["first"].append(f"output {news.name} failed: {news.message}")
        elif isinstance(news, Underrun):
            events["underruns"] += 1
        elif isinstance(news, PlaybackStopped):
            events["stop"] = news.reason
            stopped.set()

    errors = _ErrorLogCounter()
    logging.getLogger().addHandler(errors)
    controls = config.controls.check(vocab)
    bpm = controls.bpm
    engine = Engine(EngineConfig(realtime=False, lookahead_bars=config.lookahead_bars, start_delay_s=0.0,
                                 generator=GeneratorConfig(seed=config.seed, bar=config.bar)),
                    outputs, clock, controls, on_news=on_news, model=model, vocab=vocab)
    gc.collect()
    rss_start = rss_mb()
    warm_s = config.seconds * config.warmup_fraction
    samples: list[tuple[float, float]] = []
    warm = {"rss": math.nan, "objects": 0}
    switches = changes = 0
    wall_start = time.perf_counter()
    next_switch_s = rng.expovariate(1.0 / config.switch_every_s)
    next_sample_s = warm_s
    next_progress_s = 0.0
    try:
        engine.start()
        while not stopped.is_set():
            now_s = clock.now()
            if now_s >= config.seconds:
                break
            if now_s >= next_sample_s:
                if not samples:
                    gc.collect()
                    warm["objects"] = len(gc.get_objects())
                    warm["rss"] = rss_mb()
                samples.append((now_s, rss_mb()))
                next_sample_s = max(next_sample_s + RSS_SAMPLE_S, now_s)
            if now_s >= next_switch_s:
                if rng.random() < 0.2:  # sampling only: not a switch, no rollback
                    engine.set_controls(temperature=round(rng.uniform(0.5, 1.3), 2))
                else:
                    engine.set_controls(_random_controls(rng, engine.controls, vocab, bpm))
                    switches += 1
                changes += 1
                next_switch_s = now_s + rng.expovariate(1.0 / config.switch_every_s)
            if progress is not None and now_s >= next_progress_s:
                progress(now_s)
                next_progress_s = now_s + 1.0
            time.sleep(POLL_S)
    finally:
        simulated_s = clock.now()
        stats = engine.stats()
        gc.collect()
        objects_end = len(gc.get_objects())
        rss_end = rss_mb()
        samples.append((simulated_s, rss_end))
        stop_problem = None
        try:
            engine.stop()
        except MoodstreamError as err:
            stop_problem = f"stopping failed: {err}"
        logging.getLogger().removeHandler(errors)
    if events["stop"] == "running":
        events["stop"] = "stopped"
    g, s = stats.generator, stats.scheduler
    problems: list[str] = []
    stuck = ledger.stuck()
    if stuck:
        problems.append(f"{len(stuck)} note(s) left sounding after the stop: {stuck[:5]}")
    problems += ledger.problems[:5]
    if ledger.violations > 5:
        problems.append(f"... {ledger.violations - 5} more message check(s) failed")
    problems += events["first"][:5]
    if errors.count:
        problems.append(f"{errors.count} error log record(s), the first: {errors.first}")
    if stop_problem:
        problems.append(stop_problem)
    if events["stop"] != "stopped":
        problems.append(f"playback stopped by itself: {events['stop']}")
    if engine.error:
        problems.append(f"engine error: {engine.error}")
    if events["underruns"]:
        problems.append(f"{events['underruns']} underrun(s) on the fake clock")
    if ledger.counts["note_on"] == 0:
        problems.append("no note was played")
    growth = slope_per_hour([sample for sample in samples if sample[0] >= warm_s])
    if config.hours >= MIN_HOURS_FOR_MEMORY and not growth <= config.max_rss_growth_mb_per_hour:
        problems.append(f"RSS grew {growth:.2f} MB per hour (at most {config.max_rss_growth_mb_per_hour:g})")
    hours = simulated_s / 3600.0
    if config.hours >= MIN_HOURS_FOR_MEMORY and g.reanchors < config.min_reanchors_per_hour * hours:
        problems.append(f"only {g.reanchors} cache re-anchors in {hours:.2f} h")
    recorded = None
    if config.record is not None:
        recorded, file_problems = midi_file_problems(config.record)
        problems += file_problems
    log.info("soak: %.2f h, %d bars, %d switches, %d problem(s)", simulated_s / 3600.0, s.bars_played, switches,
             len(problems))
    return SoakReport(
        simulated_s=simulated_s, wall_s=time.perf_counter() - wall_start, bars_played=s.bars_played,
        bars_written=g.bars, tokens=g.tokens, switches=switches, control_changes=changes, reanchors=g.reanchors,
        rollbacks=g.rollbacks, discarded_bars=g.discarded_bars, note_ons=ledger.counts["note_on"],
        note_offs=ledger.counts["note_off"], messages=ledger.counts["messages"],
        longest_note_beats=ledger.longest_note_beats, stuck_notes=len(stuck), violations=ledger.violations,
        generator_failures=events["failures"], output_failures=events["output_failures"],
        error_logs=errors.count, underruns=events["underruns"], rss_start_mb=rss_start, rss_warm_mb=warm["rss"],
        rss_end_mb=rss_end, rss_growth_mb_per_hour=growth, gc_objects_warm=warm["objects"],
        gc_objects_end=objects_end, recorded_note_ons=recorded, stop_reason=events["stop"],
        problems=tuple(problems))
