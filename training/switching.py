"""Streams written as users hear them, and how closely the music follows a switch.

`write_stream` runs the streaming `Generator` on a fake clock and takes its bars as the scheduler does. A
switch is a live `Generator.request`, made at the bar line before the bar it governs once the generator has
filled its lookahead and written one bar more (where a live stream's generator waits), so the bars written
ahead are thrown away and rolled back by the same code as in play. The music depends only on the plan and
the seed.

`switch_plan` lays out the streams: every genre × mood pair, several one-axis switches each, a fixed
spacing apart. `judge_switches` classifies bars b+0 … b+7 after each switch (bar b is the first under the
new conditions); `real_splices` does the same on real pieces spliced at a bar line where exactly one axis
changes, which is what a generator that switched perfectly would score with the same classifier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Sequence

import numpy as np

from model.errors import MoodstreamError
from model.vocab import ANY, Conditions

AXES = ("genre", "mood")
ADHERENCE_BARS = 8  # bars b+0 … b+7 judged after each switch
SUCCESS_BARS = (1, 2, 3)  # switch success: the share of bars b+1 … b+3 classified as the new target


@dataclass(frozen=True)
class PlannedSwitch:
    at_bar: int  # first bar (0-based) under the new conditions
    conditions: Conditions
    axis: str  # the one axis that changes: "genre" or "mood"


@dataclass(frozen=True)
class StreamPlan:
    start: Conditions
    switches: tuple[PlannedSwitch, ...]
    n_bars: int
    seed: int


def switch_plan(genres: Sequence[str], moods: Sequence[str], first_bar: int, switches_per_stream: int,
                spacing: int, streams_per_pair: int, seed: int) -> list[StreamPlan]:
    """One stream per genre × mood pair (× `streams_per_pair`): `first_bar` bars, then `switches_per_stream`
    switches `spacing` bars apart, each changing one axis (alternating; the first alternates by stream) to a
    seeded random other value, then `spacing` bars after the last."""
    rng = np.random.default_rng(seed)
    pairs = [(g, m) for g in genres for m in moods]
    values = {"genre": list(genres), "mood": list(moods)}
    plans = []
    for rep in range(streams_per_pair):
        for i, (g, m) in enumerate(pairs):
            current, switches = Conditions(g, m), []
            for s in range(switches_per_stream):
                axis = AXES[(i + s + rep) % 2]
                if len(values[axis]) < 2:
                    axis = AXES[1 - AXES.index(axis)]
                others = [v for v in values[axis] if v != getattr(current, axis)]
                if not others:
                    break
                current = replace(current, **{axis: others[rng.integers(len(others))]})
                switches.append(PlannedSwitch(first_bar + s * spacing, current, axis))
            n_bars = first_bar + len(switches) * spacing if switches else first_bar
            plans.append(StreamPlan(Conditions(g, m), tuple(switches), n_bars, seed * 100_003 + len(plans)))
    return plans


@dataclass
class WrittenStream:
    plan: StreamPlan
    bars: list  # streamer.bars.Bar, bar 0 first: the bars as played
    forced_bars: int  # bars the generator closed at their token limit (bars thrown away by a switch too)
    rollbacks: int  # times the generator went back to an earlier bar (a switch threw bars away)

    @cached_property
    def ids(self) -> list[int]:
        """The whole stream: each bar's tokens, with the conditioning blocks the generator wrote."""
        return [t for bar in self.bars for t in bar.tokens]

    @property
    def conditions(self) -> list[Conditions]:
        return [bar.conditions for bar in self.bars]


def write_stream(model, vocab, plan: StreamPlan, controls, config, lookahead_bars: int = 1,
                 timeout_s: float = 600.0) -> WrittenStream:
    """Write `plan` through a streaming `Generator` (`controls`: the sampling and guidance settings, its
    genre/mood replaced by the plan's; `config`: a GeneratorConfig, its seed replaced by the plan's)."""
    from streamer.barqueue import BarQueue
    from streamer.clock import FakeClock
    from streamer.generator import Generator
    from streamer.news import GeneratorFailed

    failures: list[str] = []

    def notify(news) -> None:
        if isinstance(news, GeneratorFailed):
            failures.append(news.message)

    queue = BarQueue(lookahead_bars)
    start = controls.but(genre=plan.start.genre, mood=plan.start.mood)
    generator = Generator(model, vocab, queue, start, FakeClock(), replace(config, seed=plan.seed), notify=notify)
    switch_at = {s.at_bar: s for s in plan.switches}
    bars = []
    deadline = time.monotonic() + timeout_s
    generator.start()
    try:
        for seq in range(plan.n_bars):
            switch = switch_at.get(seq)
            if switch is not None:
                _wait_until_written(generator, seq + lookahead_bars, deadline)
                generator.request(controls.but(genre=switch.conditions.genre, mood=switch.conditions.mood))
            bar = queue.take(wait=True, stop=generator.finished)
            if bar is None:
                raise MoodstreamError(f"the generator stopped at bar {seq}: {'; '.join(failures) or 'no reason'}")
            if bar.seq != seq:
                raise RuntimeError(f"expected bar {seq} from the generator, got bar {bar.seq}")
            bars.append(bar)
    finally:
        generator.stop()
        generator.join(10.0)
    stats = generator.stats()
    return WrittenStream(plan, bars, stats.forced_bar_ends, stats.rollbacks)


def _wait_until_written(generator, seq: int, deadline: float) -> None:
    """Wait until the generator has finished bar `seq` (it then waits for room in the queue)."""
    while generator.last_written_seq < seq:
        if generator.finished.is_set():
            return
        if time.monotonic() > deadline:
            raise MoodstreamError(f"the generator did not reach bar {seq} in time")
        time.sleep(0.001)


# ---- judging ----------------------------------------------------------------------------------------------
@dataclass
class AxisHits:
    """Per switch, whether each judged bar b+k was classified as the new target on the axis that changed."""

    rows: list  # one (ADHERENCE_BARS,) float array per switch; NaN where the bar is not there
    silent: list = field(default_factory=list)  # per switch: bar b has no note
    tempo_change: list = field(default_factory=list)  # per switch: |tempo of bar b ÷ tempo of bar b−1 − 1|

    def success(self) -> np.ndarray:
        """Per switch: the share of bars b+1 … b+3 classified as the target."""
        if not self.rows:
            return np.zeros(0)
        hits = np.stack(self.rows)[:, list(SUCCESS_BARS)]
        return np.nanmean(hits, axis=1)

    def summary(self) -> dict:
        success = self.success()
        success = success[~np.isnan(success)]
        curve = np.nanmean(np.stack(self.rows), axis=0) if self.rows else np.full(ADHERENCE_BARS, np.nan)
        se = float(success.std(ddof=1) / np.sqrt(success.size)) if success.size > 1 else None
        changes = np.asarray([c for c in self.tempo_change if not np.isnan(c)])
        return {"rate": float(success.mean()) if success.size else None, "se": se, "switches": int(success.size),
                "curve": [None if np.isnan(v) else float(v) for v in curve],
                "silent_first_bar_rate": float(np.mean(self.silent)) if self.silent else None,
                "tempo_change_median": float(np.median(changes)) if changes.size else None}


def _judge(clf, view, first_bar: int, target: Conditions, axis: str, n_bars: int, hits: AxisHits) -> None:
    """Add one switch of a prepared stream (`clf.prepare`) to `hits`: 1/0 per bar first_bar + k (NaN past the
    stream's end or `n_bars`), whether bar first_bar is silent and how far its tempo moved from the bar
    before."""
    row = np.full(ADHERENCE_BARS, np.nan)
    windows = [(first_bar + k, first_bar + k + 1) for k in range(min(ADHERENCE_BARS, n_bars))
               if first_bar + k < view.n_bars]
    index = AXES.index(axis)
    for k, prediction in enumerate(clf.classify(view, windows)):
        row[k] = float(prediction[index] == getattr(target, axis))
    hits.rows.append(row)
    if 0 < first_bar < view.n_bars:
        hits.silent.append(not view.bar_has_notes(first_bar, first_bar + 1))
        before, after = view.parsed.tempo_bpm[first_bar - 1], view.parsed.tempo_bpm[first_bar]
        hits.tempo_change.append(abs(after / before - 1.0))


def judge_switches(clf, streams: Sequence[WrittenStream], views: Sequence | None = None) -> dict[str, AxisHits]:
    """Bars b+0 … b+7 after every switch of every stream, per axis (`views`: the streams already prepared
    by `clf.prepare`, else they are prepared here)."""
    hits = {axis: AxisHits([]) for axis in AXES}
    for i, stream in enumerate(streams):
        view = clf.prepare(stream.ids) if views is None else views[i]
        ends = [s.at_bar for s in stream.plan.switches[1:]] + [len(stream.bars)]
        for switch, end in zip(stream.plan.switches, ends):
            _judge(clf, view, switch.at_bar, switch.conditions, switch.axis, end - switch.at_bar, hits[switch.axis])
    return hits


def _bars_with_tempo(vocab, is_tempo: np.ndarray, ids: Sequence[int]) -> tuple[list[list[int]], list]:
    """The piece's bars (conditions stripped) and the tempo token in force at the start of each."""
    bars = [vocab.strip_conditions(b) for b in vocab.split_bars(list(ids))]
    tempos, tempo = [], None
    for bar in bars:
        tempos.append(tempo)
        for token_id in bar:
            if is_tempo[token_id]:
                tempo = token_id
    return bars, tempos


def real_splices(clf, vocab, pieces, per_axis: int, before_bars: int, seed: int) -> dict[str, AxisHits]:
    """`per_axis` splices per axis of two real pieces whose labels differ on that axis only: `before_bars`
    bars of one (from a random bar), then the other from a random bar (its tempo restated:
    `training.windows.restate_tempo`), judged as generated switches are. Pieces need a genre and a mood the classifier knows (not `any`)."""
    from model.remi import TEMPO, TIME_SIG, RemiTable
    from training.windows import restate_tempo

    kind = RemiTable(vocab).kind
    is_tempo, is_timesig, position0 = kind == TEMPO, kind == TIME_SIG, vocab.token_to_id["Position_0"]
    rng = np.random.default_rng(seed)
    usable = [p for p in pieces if p.genre in clf.genres and p.mood in clf.moods and ANY not in (p.genre, p.mood)]
    split = {}
    for piece in usable:
        bars, tempos = _bars_with_tempo(vocab, is_tempo, piece.ids)
        if len(bars) >= max(before_bars, ADHERENCE_BARS):
            split[piece.name] = (piece, bars, tempos)
    hits = {axis: AxisHits([]) for axis in AXES}
    entries = list(split.values())
    for axis in AXES:
        other = AXES[1 - AXES.index(axis)]
        pairs = [(a, b) for a in range(len(entries)) for b in range(len(entries))
                 if getattr(entries[a][0], axis) != getattr(entries[b][0], axis)
                 and getattr(entries[a][0], other) == getattr(entries[b][0], other)]
        if not pairs:
            continue
        for i in rng.choice(len(pairs), size=min(per_axis, len(pairs)), replace=False):
            (pa, bars_a, _), (pb, bars_b, tempos_b) = entries[pairs[i][0]], entries[pairs[i][1]]
            a0 = int(rng.integers(len(bars_a) - before_bars + 1))
            b0 = int(rng.integers(len(bars_b) - ADHERENCE_BARS + 1))
            target = Conditions(pb.genre, pb.mood)
            ids = vocab.condition_ids(Conditions(pa.genre, pa.mood))
            for bar in bars_a[a0:a0 + before_bars]:
                ids += bar
            first = bars_b[b0]
            if tempos_b[b0] is not None:
                first = restate_tempo(first, tempos_b[b0], position0, is_tempo, is_timesig)
            ids += vocab.condition_ids(target) + first
            for bar in bars_b[b0 + 1:b0 + ADHERENCE_BARS]:
                ids += bar
            _judge(clf, clf.prepare(ids), before_bars, target, axis, ADHERENCE_BARS, hits[axis])
    return hits
