"""Streaming measurements through the real engine (generator + scheduler threads, `streamer.engine.Engine`).

`simulated_run` streams on the `FakeClock` as fast as the generator writes (every bar's token count, writing
time and length; RSS after a warm-up and at the end; genre/mood switches every few bars) — the source of
the real-time factor and of the memory-growth figure. `live_run` streams on the real clock into a null
output that takes MIDI clock, makes genre/mood switches at chosen times before bar lines and reads the
engine's own news and statistics: send error, underruns, switch timing. Benchmarks, not tests.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

BENCH_BPM = 120.0  # every streaming measurement plays at this tempo (the model's tempo tokens are overridden)
MIN_SWITCH_LEAD_S = 0.3  # switches made at least this long before a bar line must land on it
FIRST_NOTE_LATE_MS = 5.0  # … with their first note sent at most this long after its due time (`late_ms`)
GUIDANCE_W = 1.5  # "guidance on": any weight ≠ 1 runs the unconditioned row; the cost does not depend on it
RSS_SAMPLE_EVERY_S = 60.0  # simulated seconds between RSS samples for the growth trend


@dataclass(frozen=True)
class BarTiming:
    """One generated bar: its tokens, the seconds the generator took, its length in beats."""

    tokens: int
    generate_s: float
    length_beats: float

    @property
    def tokens_per_beat(self) -> float:
        return self.tokens / self.length_beats if self.length_beats > 0 else math.inf

    def realtime_factor(self, bpm: float = BENCH_BPM) -> float:
        """Bar duration at `bpm` ÷ time to write it (> 1: written faster than it plays)."""
        return self.length_beats * 60.0 / bpm / self.generate_s if self.generate_s > 0 else math.inf


def dense_bars(bars: Sequence[BarTiming], share: float = 0.01) -> list[BarTiming]:
    """The densest `share` of `bars` by tokens per beat (at least one bar); density is what sets the cost
    of a bar relative to its duration."""
    ranked = sorted(bars, key=lambda b: b.tokens_per_beat, reverse=True)
    return ranked[:max(1, math.ceil(share * len(ranked)))] if ranked else []


def dense_rtf(bars: Sequence[BarTiming], bpm: float = BENCH_BPM, share: float = 0.01,
              worst: bool = False) -> float:
    """The median real-time factor of the densest `share` of bars (`worst`: the lowest); NaN without bars.
    The median keeps one bar slowed by another process on a shared machine from deciding the figure;
    the lowest is reported beside it."""
    factors = sorted(b.realtime_factor(bpm) for b in dense_bars(bars, share))
    if not factors:
        return math.nan
    if worst:
        return factors[0]
    middle = len(factors) // 2
    return factors[middle] if len(factors) % 2 else (factors[middle - 1] + factors[middle]) / 2


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _condition_pairs(vocab, seed: int) -> list[tuple[str, str]]:
    """Every (genre, mood) pair of the vocabulary except the unconditioned ones, shuffled by `seed`."""
    genres = [g for g in vocab.genres if g != "any"] or list(vocab.genres)
    moods = [m for m in vocab.moods if m != "any"] or list(vocab.moods)
    pairs = [(g, m) for g in genres for m in moods]
    random.Random(seed).shuffle(pairs)
    return pairs


# ---- simulated clock ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatedResult:
    bars: tuple[BarTiming, ...]  # every bar written (bars a switch threw away included: they cost the same)
    simulated_s: float
    wall_s: float
    switches: int
    rss_warm_mb: float  # after the warm-up
    rss_end_mb: float
    warm_simulated_s: float  # simulated time at the warm-up sample
    guidance: bool
    rss_samples: tuple[tuple[float, float], ...] = ()  # (simulated s, MB) from the warm-up on, a minute apart

    @property
    def rss_growth_mb_per_hour(self) -> float:
        """Least-squares slope of the RSS samples (one allocation caught at the last sample does not make a
        trend); from the first and last alone when there are fewer than 3."""
        from streamer.soak import slope_per_hour

        if len(self.rss_samples) >= 3:
            return slope_per_hour(list(self.rss_samples))
        span_s = self.simulated_s - self.warm_simulated_s
        return (self.rss_end_mb - self.rss_warm_mb) / span_s * 3600.0 if span_s > 0 else math.nan


def simulated_run(model, vocab, simulated_s: float, seed: int = 0, guidance_w: float = 1.0,
                  switch_every_bars: int = 16, warmup_s: Optional[float] = None,
                  progress: Optional[Callable[[float], None]] = None) -> SimulatedResult:
    """Stream `simulated_s` seconds of music at 120 BPM on the fake clock (no waiting: the generator is
    the only limit) into a null output, switching genre/mood every `switch_every_bars` bars.

    RSS is sampled at the first bar line after `warmup_s` simulated seconds (default: a tenth of the run,
    at most 5 minutes) and at the last. `progress(simulated seconds)` is called at every bar line."""
    from streamer.clock import FakeClock
    from streamer.controls import Controls
    from streamer.engine import BarQueued, BarStarted, Engine, EngineConfig, GeneratorFailed
    from streamer.generator import GeneratorConfig
    from streamer.outputs.null import NullOutput

    warmup_s = min(simulated_s / 10.0, 300.0) if warmup_s is None else warmup_s
    clock = FakeClock()
    pairs = _condition_pairs(vocab, seed)
    bars: list[BarTiming] = []
    state = {"started": 0, "switches": 0, "rss_warm": None, "warm_s": 0.0, "failure": None, "next_sample_s": 0.0}
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    holder: dict = {}

    def on_news(news) -> None:
        if isinstance(news, BarQueued):
            bars.append(BarTiming(len(news.bar.tokens), news.bar.generate_s, news.bar.length_beats))
        elif isinstance(news, BarStarted):
            now_s = clock.now()
            state["started"] += 1
            if state["rss_warm"] is None and now_s >= warmup_s:
                state["rss_warm"], state["warm_s"] = rss_mb(), now_s
            if state["rss_warm"] is not None and now_s >= state["next_sample_s"]:
                samples.append((now_s, rss_mb()))
                state["next_sample_s"] = now_s + RSS_SAMPLE_EVERY_S
            if progress is not None:
                progress(now_s)
            if now_s >= simulated_s:
                done.set()
            elif switch_every_bars and state["started"] % switch_every_bars == 0:
                genre, mood = pairs[state["switches"] % len(pairs)]
                state["switches"] += 1
                holder["engine"].set_controls(genre=genre, mood=mood)
        elif isinstance(news, GeneratorFailed) and news.fatal:
            state["failure"] = news.message
            done.set()

    genre, mood = pairs[-1]
    controls = Controls(genre=genre, mood=mood, bpm=BENCH_BPM, guidance_w=guidance_w)
    config = EngineConfig(realtime=False, start_delay_s=0.0, midi_clock=False, guidance=guidance_w != 1.0,
                          generator=GeneratorConfig(seed=seed))
    engine = Engine(config, [NullOutput()], clock=clock, controls=controls, on_news=on_news, model=model,
                    vocab=vocab)
    holder["engine"] = engine
    started = time.perf_counter()
    engine.start()
    try:
        while not done.wait(0.5):
            if engine.scheduler.finished.is_set():
                break
    finally:
        rss_end, end_s = rss_mb(), clock.now()
        engine.stop()
    wall_s = time.perf_counter() - started
    if state["failure"]:
        raise RuntimeError(f"the generator failed during the simulated run: {state['failure']}")
    rss_warm = state["rss_warm"] if state["rss_warm"] is not None else rss_end
    if state["rss_warm"] is not None:
        samples.append((end_s, rss_end))
    return SimulatedResult(tuple(bars), end_s, wall_s, state["switches"], rss_warm, rss_end, state["warm_s"],
                           guidance_w != 1.0, tuple(samples))


# ---- real clock -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwitchRecord:
    switch_id: int
    lead_s: float  # seconds left to the next bar line when the control changed
    bar_line: int  # playback bar that starts at that bar line
    applied_bar: Optional[int] = None  # playback bar the new conditions governed first
    sounded_bar: Optional[int] = None  # playback bar of the first note under them
    latency_ms: Optional[float] = None  # control change → that note (the engine's own figure)
    first_note_late_ms: Optional[float] = None  # that note's send time − its due time (the scheduler's figure)

    @property
    def on_time(self) -> bool:
        """The new conditions govern the bar at that bar line and their first note sounds in it, at most
        `FIRST_NOTE_LATE_MS` after its due time (a bar may start while its bar line's notes are written)."""
        return (self.applied_bar == self.bar_line and self.sounded_bar == self.bar_line
                and self.first_note_late_ms is not None and self.first_note_late_ms <= FIRST_NOTE_LATE_MS)


@dataclass(frozen=True)
class LiveResult:
    seconds: float
    guidance_w: float  # the instrument's default (the live run plays with the default controls)
    bars: tuple[BarTiming, ...]
    switches: tuple[SwitchRecord, ...]
    send_error_p50_ms: float
    send_error_p99_ms: float
    send_error_max_ms: float
    messages_sent: int
    late_messages: int
    underruns: int
    reanchors: int
    played_while_written: int  # bars that started at their bar line before they were finished (LiveBar)
    realtime_priority: str = "none"  # what the scheduler thread ran at: fifo | nice | none


class _LiveNews:
    """Collects the engine's news for `live_run` (called on the engine's news thread)."""

    def __init__(self):
        from streamer.engine import BarQueued, BarStarted, SwitchApplied, SwitchSounded

        self._types = (BarQueued, BarStarted, SwitchApplied, SwitchSounded)
        self.cond = threading.Condition()
        self.bars: list[BarTiming] = []
        self.bar_starts = 0
        self.applied: dict[int, int] = {}  # switch id → bar number
        self.sounded: dict[int, tuple[int, float, float]] = {}  # switch id → (bar number, latency ms, late ms)
        self.failure: Optional[str] = None

    def __call__(self, news) -> None:
        from streamer.engine import GeneratorFailed

        queued, started, applied, sounded = self._types
        with self.cond:
            if isinstance(news, queued):
                self.bars.append(BarTiming(len(news.bar.tokens), news.bar.generate_s, news.bar.length_beats))
            elif isinstance(news, started):
                self.bar_starts += 1
            elif isinstance(news, applied):
                self.applied.setdefault(news.switch_id, news.bar_number)
            elif isinstance(news, sounded):
                self.sounded.setdefault(news.switch_id, (news.bar_number, news.latency_ms, news.late_ms))
            elif isinstance(news, GeneratorFailed) and news.fatal:
                self.failure = news.message
            self.cond.notify_all()

    def wait_bar_start(self, after: int, timeout_s: float) -> int:
        """Wait until more than `after` bars have started; returns the count."""
        with self.cond:
            self.cond.wait_for(lambda: self.bar_starts > after or self.failure is not None, timeout_s)
            return self.bar_starts

    def wait_sounded(self, switch_id: int, timeout_s: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: switch_id in self.sounded or self.failure is not None, timeout_s)


def _clocked_null():
    from streamer.outputs.null import NullOutput

    class ClockedNull(NullOutput):
        """A null output that also takes MIDI clock and transport, as a DAW port does."""

        name = "bench-null"
        wants_clock = True

    return ClockedNull()


def live_run(model, vocab, seconds: float, seed: int = 0, progress: Optional[Callable[[float], None]] = None,
             min_lead_s: float = MIN_SWITCH_LEAD_S, rt_priority: str = "auto", switch_at=None,
             anywhere: bool = False) -> LiveResult:
    """Stream for `seconds` on the real clock at 120 BPM (other controls: the instrument's defaults) into a
    null output with MIDI clock, switching genre/mood every other bar at a random time before the next bar
    line: alternately within 100 ms past `min_lead_s`, and anywhere from `min_lead_s` to the bar line (with
    `anywhere`, always anywhere: the times a user's switches come at).
    The scheduler thread asks for `rt_priority` (`EngineConfig.rt_priority`); switches land where `switch_at`
    says (`SwitchAt`; None: bar). A switch's `latency_ms` is the engine's: the control change to its first note."""
    from streamer.clock import MonotonicClock
    from streamer.controls import Controls, SwitchAt
    from streamer.engine import Engine, EngineConfig, freeze_heap
    from streamer.generator import GeneratorConfig

    clock = MonotonicClock()
    news = _LiveNews()
    pairs = _condition_pairs(vocab, seed + 1)
    genre, mood = pairs[-1]
    config = EngineConfig(realtime=True, midi_clock=True, rt_priority=rt_priority, generator=GeneratorConfig(seed=seed),
                          switch_at=switch_at or SwitchAt())
    engine = Engine(config, [_clocked_null()], clock=clock, controls=Controls(genre=genre, mood=mood, bpm=BENCH_BPM),
                    on_news=news, model=model, vocab=vocab)
    freeze_heap()  # as play and stream do
    scheduler = engine.scheduler
    rng = random.Random(seed)
    records: list[SwitchRecord] = []
    engine.start()
    try:
        if not scheduler.started.wait(60.0):
            raise RuntimeError("the stream did not start within 60 s")
        started_s = clock.now()
        end_s = started_s + seconds
        seen = news.wait_bar_start(0, 10.0)
        while clock.now() < end_s and news.failure is None:
            if progress is not None:
                progress(clock.now() - started_s)
            left_s = scheduler.seconds_to_next_bar()
            if left_s is None or left_s < min_lead_s + 0.05 or clock.now() + left_s + 4.0 > end_s:
                seen = news.wait_bar_start(seen, 10.0)
                continue
            # every other switch lands just past the minimum lead: the hard case the goal is about
            high_s = left_s - 0.02 if anywhere or len(records) % 2 else min(left_s - 0.02, min_lead_s + 0.1)
            lead_s = rng.uniform(min_lead_s, high_s)
            time.sleep(max(0.0, left_s - lead_s))
            left_s = scheduler.seconds_to_next_bar()
            if left_s is None or left_s < min_lead_s:
                seen = news.wait_bar_start(seen, 10.0)
                continue
            bar_now = scheduler.stats().bar_number
            genre, mood = pairs[len(records) % len(pairs)]
            engine.set_controls(genre=genre, mood=mood)
            switch = engine.last_switch
            records.append(SwitchRecord(switch.switch_id, left_s, bar_now + 1))
            news.wait_sounded(switch.switch_id, 12.0 if switch_at is None or switch_at.bars <= 2 else 20.0)
            seen = news.wait_bar_start(news.bar_starts, 10.0)  # let one bar play before the next switch
        remaining_s = end_s - clock.now()
        if remaining_s > 0 and news.failure is None:
            time.sleep(remaining_s)
        stats = engine.stats()
        elapsed_s = clock.now() - started_s
    finally:
        engine.stop()
    if news.failure:
        raise RuntimeError(f"the generator failed during the live run: {news.failure}")
    switches = []
    with news.cond:
        for r in records:
            sounded = news.sounded.get(r.switch_id)
            switches.append(SwitchRecord(r.switch_id, r.lead_s, r.bar_line, news.applied.get(r.switch_id),
                                         *(sounded if sounded else (None, None, None))))
        bars = tuple(news.bars)
    s = stats.scheduler
    return LiveResult(elapsed_s, engine.controls.guidance_w, bars, tuple(switches), s.send_error_p50_ms, s.send_error_p99_ms,
                      s.send_error_max_ms, s.messages_sent, s.late_messages, s.underruns,
                      stats.generator.reanchors, s.live_bars, s.realtime_priority)


@dataclass(frozen=True)
class SwitchSummary:
    counted: int  # switches made ≥ min lead before a bar line
    on_time: int
    on_time_rate: float
    latency_ms_p50: float
    latency_ms_p99: float
    lead_s_min: float
    late: tuple[SwitchRecord, ...] = field(default=())


def summarize_switches(switches: Sequence[SwitchRecord], min_lead_s: float = MIN_SWITCH_LEAD_S) -> SwitchSummary:
    import numpy as np

    counted = [s for s in switches if s.lead_s >= min_lead_s]
    on_time = [s for s in counted if s.on_time]
    latencies = [s.latency_ms for s in counted if s.latency_ms is not None]
    pct = (lambda q: float(np.percentile(latencies, q))) if latencies else (lambda q: math.nan)
    return SwitchSummary(len(counted), len(on_time), len(on_time) / len(counted) if counted else math.nan,
                         pct(50), pct(99), min((s.lead_s for s in counted), default=math.nan),
                         tuple(s for s in counted if not s.on_time))


@dataclass(frozen=True)
class TimerError:
    """Lateness of the real clock's `sleep_until` alone, in ms, at the priority its thread got."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    realtime_priority: str  # fifo | nice | none (`streamer.rt`)


def timer_error(seconds: float, period_s: float = 0.01, rt_priority: str = "auto") -> TimerError:
    """How late the real clock's `sleep_until` wakes alone (no model running), every `period_s`, on a thread
    of its own at the priority the scheduler thread asks for with `rt_priority` (given back before it ends):
    what the machine and the interpreter give before the engine adds anything."""
    import sys

    import numpy as np

    from streamer.clock import MonotonicClock
    from streamer.engine import SWITCH_INTERVAL_S
    from streamer.rt import raise_thread_priority, restore_thread_priority

    clock, wake = MonotonicClock(), threading.Event()
    errors_ms: list[float] = []
    got: dict = {}

    def measure() -> None:
        saved = raise_thread_priority(rt_priority, who="bench timer thread")
        got["mode"] = saved.mode
        try:
            start_s = clock.now() + period_s
            for i in range(max(1, int(seconds / period_s))):
                due_s = start_s + i * period_s
                clock.sleep_until(due_s, wake)
                errors_ms.append((clock.now() - due_s) * 1e3)
        finally:
            restore_thread_priority(saved)

    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    thread = threading.Thread(target=measure, name="moodstream-bench-timer")
    try:
        thread.start()
        thread.join()
    finally:
        sys.setswitchinterval(before)
    if not errors_ms:
        raise RuntimeError("the timer thread measured nothing (see the log)")
    return TimerError(float(np.percentile(errors_ms, 50)), float(np.percentile(errors_ms, 99)),
                      float(max(errors_ms)), got["mode"])
