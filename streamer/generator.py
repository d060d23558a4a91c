"""The generator thread: owns the model's decoder (KV cache), the grammar state and the RNG; writes bars.

For bar `seq` it reads the controls that govern it (`ControlSchedule`), feeds a conditioning block when the
conditions change (before every bar for a model trained so: `GPTConfig.bar_conditions`), then `Bar`, and samples
under the grammar mask until the model starts the next bar (or the bar reaches its token limit at a note boundary:
`max_bar_tokens`, and `max_tokens_per_beat` per beat of its time signature). The first bar under new conditions
(after a switch, and the stream's first) may not end before its first note: a switch is heard in its bar. Each
bar's timed messages are made as its tokens are sampled (`bars.BarBuilder`) and the bar is offered to the
scheduler while it is written (`LiveBar`: it may start before it is finished); finished bars go on the
`BarQueue`, which blocks while the lookahead is full.
A switch throws away the bars not yet started: the cache is cut back (`Decoder.truncate`) to the end of the last
kept bar, that bar's grammar, bar and RNG states come back, and generation goes on — so the music depends only on
the seed and on which controls govern which bar. The first bar under new conditions keeps at most
`GeneratorConfig.switch_context_bars` bars of the old music before its block (0: it starts afresh from the new
block). A beat switch rolls back the bar playing too, and its rest is written again from the cut
(`switching.Cut`, `switching.fragment_start`) and offered to the scheduler as it is written. When the context
fills, the cache is re-anchored: a conditioning block + the last bars that fit in half of it, whose cached
keys/values are kept and slid into place (`GeneratorConfig.slide`). After each bar, freed heap memory goes back
to the OS (`heap_trimmer`). Errors are reported, the stream resumes from the last good bar.

Why one module of ~600 lines: it is one thread's state (the decoder's cache, the bar history it can roll
back to, the RNG and grammar states), and every part here — writing a bar, a rollback, a beat switch's cut,
a re-anchor — changes that state together; the decisions about a switch are in `streamer.switching`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from model.grammar import AFTER_POSITION
from model.remi import TEMPO
from model.vocab import MOOD_NEGATIVES, Conditions
from streamer import switching
from streamer.barqueue import BarQueue, LiveBar
from streamer.bars import Bar, BarBuilder, BarConfig, BarState, RemiTable
from streamer.controls import ControlSchedule, Controls, ScheduleEntry
from streamer.news import BarQueued, BarsDiscarded, GeneratorFailed
from streamer.switching import Cut, FragmentStart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    max_bar_tokens: int = 448  # a bar this long ends at its next note boundary (real bars of the corpus: p99 ≈ 443)
    max_tokens_per_beat: float = 112.0  # … and one of b beats already at b × this many (448 in 4/4, 336 in 3/4)
    bar_reserve_tokens: int = 256  # re-anchor before a bar when fewer free slots than this remain
    slide: bool = True  # re-anchor by keeping the recent bars' cached keys/values (a copy), not recomputing them
    history_bars: int = 64  # finished bars kept for rollbacks and re-anchoring
    context_tokens: Optional[int] = None  # the model's context in the stream (None: its block_size)
    switch_context_bars: Optional[int] = 0  # after a genre/mood switch, keep only this many bars of the old
    #                                         music in the context (0: start afresh from the new block; None:
    #                                         keep all that fits). 0 follows a switch best (model card).
    switch_negative: str = "any"  # the guidance row after a switch: "any" (unconditioned) or "old" (the old
    #                               conditions: old + w·(new − old)), until the next re-anchor or switch
    switch_guidance_w: Optional[float] = None  # guidance weight for the first `switch_boost_bars` bars of a
    switch_boost_bars: int = 2  #                  switch (None: the controls' weight throughout)
    mood_negative: str = "null"  # the mood guidance's second row reads: "null" (no mood) or "opposite" (the
    #                              opposite quadrant's mood: happy ↔ sad, tense ↔ calm; model card)
    max_failures: int = 3  # consecutive errors before the generator gives up
    bar: BarConfig = field(default_factory=BarConfig)

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed = {self.seed!r} must be an integer ≥ 0")
        if self.max_bar_tokens < 16:
            raise ValueError(f"max_bar_tokens = {self.max_bar_tokens!r} must be ≥ 16")
        if not self.max_tokens_per_beat >= 4:
            raise ValueError(f"max_tokens_per_beat = {self.max_tokens_per_beat!r} must be ≥ 4")
        if self.bar_reserve_tokens < 8:
            raise ValueError(f"bar_reserve_tokens = {self.bar_reserve_tokens!r} must be ≥ 8")
        if self.context_tokens is not None and self.context_tokens < 64:
            raise ValueError(f"context_tokens = {self.context_tokens!r} must be ≥ 64 or None")
        if self.history_bars < 8:
            raise ValueError(f"history_bars = {self.history_bars!r} must be ≥ 8")
        if self.max_failures < 1:
            raise ValueError(f"max_failures = {self.max_failures!r} must be ≥ 1")
        if self.mood_negative not in MOOD_NEGATIVES:
            raise ValueError(f"mood_negative = {self.mood_negative!r} must be one of {', '.join(MOOD_NEGATIVES)}")
        if self.switch_negative not in ("any", "old"):
            raise ValueError(f"switch_negative = {self.switch_negative!r} must be 'any' or 'old'")
        if self.switch_guidance_w is not None and not 0.0 <= self.switch_guidance_w <= 10.0:
            raise ValueError(f"switch_guidance_w = {self.switch_guidance_w!r} must be from 0 to 10 or None")
        if self.switch_boost_bars < 1:
            raise ValueError(f"switch_boost_bars = {self.switch_boost_bars!r} must be ≥ 1")
        if self.switch_context_bars is not None and (not isinstance(self.switch_context_bars, int)
                                                     or self.switch_context_bars < 0):
            raise ValueError(f"switch_context_bars = {self.switch_context_bars!r} must be a whole number ≥ 0 or None")


def parse_switch_context(text: str) -> Optional[int]:
    """`--switch-context` → `GeneratorConfig.switch_context_bars`: a whole number of bars ≥ 0, or `all`."""
    from model.errors import MoodstreamError

    value = str(text).strip().lower()
    if value == "all":
        return None
    if not value.isdigit():
        raise MoodstreamError(f"--switch-context {text!r}: use a whole number of bars (0 = start afresh from the new "
                              f"conditions) or 'all'")
    return int(value)


def heap_trimmer() -> Optional[Callable[[int], object]]:
    """glibc's `malloc_trim` (call it with 0), which hands the heap's free pages back to the OS; None
    without glibc.

    A stream allocates and frees arrays and tensors of many sizes for hours, and glibc keeps freed memory
    between live blocks: in a fake-clock stream (default model, seed 0) RSS crept from 281 to 299 MB between
    simulated minutes 2 and 24 without a trim, and stayed within 273–278 MB with one after every bar. A
    call takes ~0.2 ms (ctypes lets go of the GIL)."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def bar_token_limit(max_bar_tokens: int, max_tokens_per_beat: float, beats: float | None) -> int:
    """How many tokens a bar of `beats` quarter-note beats (None: not known yet) may take before it ends at its
    next note boundary. Real bars of the corpus reach 97 tokens per beat at p99 (195 at p99.9; 2/4 and 3/4
    bars at most 46 and 38 at p99); without the per-beat limit the model can write a 3/4 or 2/4 bar as dense as
    a full 4/4 one, which sounds crammed and takes twice as long per beat to write."""
    if beats is None or beats <= 0:
        return max_bar_tokens
    return max(16, min(max_bar_tokens, math.ceil(max_tokens_per_beat * beats)))


@dataclass(frozen=True)
class GeneratorStats:
    bars: int
    tokens: int
    tokens_per_s: float  # over the recent bars
    real_time_factor: float  # bar duration ÷ time to generate it, recent bars (higher = more headroom)
    estimated_bar_s: float  # a cautious guess of the time to generate the next bar
    estimated_head_s: float  # a cautious guess of the time until the next bar can start playing
    reanchors: int
    rollbacks: int
    discarded_bars: int
    forced_bar_ends: int  # bars cut at their token limit (`bar_token_limit`)
    failures: int
    guidance: bool  # the decoder runs the unconditioned row too


class _Abort(Exception):
    """A switch or stop arrived mid-bar: drop the bar being written."""


@dataclass(frozen=True)
class _Record:
    """A finished bar, with everything needed to continue right after it."""

    seq: int
    tokens: tuple[int, ...]
    conditions: Optional[Conditions]  # None for the start record
    cache_end: Optional[int]  # cache length just after this bar (None: not in the cache as it is now)
    grammar: object  # GrammarState after the bar
    bar_state: BarState
    rng_state: torch.Tensor
    switch_id: int
    carried_qpm: Optional[float] = None  # the tempo carried into the bar (a cut of it starts from there)


class Generator:
    """Writes bars for one stream on its own thread (see the module docstring).

    Thread-safe: `request(controls, ...)`, `stats()`, `stop()`. `run()` is the thread body.
    `notify(news)` must not block; `on_failure(err)` is called after an error (the engine silences outputs).
    """

    def __init__(self, model, vocab, queue: BarQueue, controls: Controls, clock,
                 config: GeneratorConfig = GeneratorConfig(), notify: Optional[Callable[[object], None]] = None,
                 on_failure: Optional[Callable[[Exception], None]] = None, guidance: bool = False):
        from model.engine import Decoder
        from model.grammar import Grammar

        self.model = model
        self.vocab = vocab
        self.queue = queue
        self.clock = clock
        self.config = config
        self._notify = notify or (lambda news: None)
        self._on_failure = on_failure
        self.table = RemiTable(vocab)
        self.grammar = Grammar(vocab, allow_sampled_conditions=False)
        capacity = None if config.context_tokens is None else min(config.context_tokens, model.config.block_size)
        self.decoder = Decoder(model, guidance=guidance or controls.guidance_w != 1.0, vocab=vocab, capacity=capacity,
                               mood_negative=config.mood_negative)
        capacity = self.decoder.capacity
        self.max_bar_tokens = min(config.max_bar_tokens, capacity // 2 - 8)
        self.reserve_tokens = min(config.bar_reserve_tokens, capacity // 4)
        self.reanchor_tokens = capacity // 2
        self.bar_conditions = bool(getattr(model.config, "bar_conditions", False))  # a block before every bar
        if self.max_bar_tokens < 16:
            raise ValueError(f"the model's context ({capacity} tokens) is too short to stream bars")
        self.rng = torch.Generator().manual_seed(config.seed)
        self._no_bar = torch.ones(vocab.vocab_size, dtype=torch.bool)  # every token but `Bar`
        self._no_bar[vocab.bar_id] = False
        self._schedule = ControlSchedule.starting_with(controls.check(vocab))
        self._switches = 0
        start = _Record(-1, (), None, 0, self.grammar.start(), BarState(), self.rng.get_state(), 0)
        self._history: deque[_Record] = deque([start])
        self._seq = 0  # next bar to write
        self._lock = threading.Lock()  # guards the schedule, `_generating` and `_switches` (taken before the queue's)
        self._generating = 0  # the bar being written or waiting for room in the queue
        self._stop = threading.Event()
        self._cut_record: Optional[_Record] = None  # the bar the last beat switch cut, as it was written
        self.finished = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._recent: deque[tuple[int, float, float, float]] = deque(maxlen=16)  # tokens, generate_s, bar_s, head_s
        self._live: Optional[LiveBar] = None  # the bar being written
        self._counts = {"bars": 0, "tokens": 0, "reanchors": 0, "rollbacks": 0, "discarded": 0, "forced": 0,
                        "failures": 0}
        self._stats_lock = threading.Lock()
        self._trim_heap = heap_trimmer()

    # ---- control from other threads --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="moodstream-generator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()

    def join(self, timeout_s: Optional[float] = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    @property
    def last_written_seq(self) -> int:
        """The newest bar finished (-1 before any); after a rollback, the bar it went back to."""
        return self._history[-1].seq

    @property
    def controls(self) -> Controls:
        """The controls of the newest schedule entry (what the performer last asked for)."""
        return self._schedule.last.controls

    def request(self, controls: Controls, skip_bars: int = 0, at_seq: Optional[int] = None) -> ScheduleEntry:
        """Govern bars with `controls` from the returned entry's `from_seq` on.

        A genre/mood change starts at the first bar not yet started (+ `skip_bars`), or at `at_seq`;
        queued bars from there on are thrown away. Other changes apply from the next bar written.
        """
        controls.check(self.vocab)
        with self._lock:  # then the queue's: the generator thread takes them in this order too
            last = self._schedule.last
            changed = controls.conditions != last.controls.conditions
            next_to_play = self.queue.next_to_play()
            if at_seq is not None:
                first = max(at_seq, next_to_play)
            elif changed:
                first = next_to_play + max(0, skip_bars)
            else:
                first = max(self._generating + 1, next_to_play)
            dropped = 0
            if changed:  # the queue moves it on if the scheduler has started that bar meanwhile
                first, dropped = self.queue.switch_from(first, written_upto=self._generating)
            switch_id = last.switch_id
            if changed:
                self._switches += 1
                switch_id = self._switches
            entry = ScheduleEntry(first, controls, switch_id, self.clock.now() if changed else None)
            self._schedule = self._schedule.with_entry(entry)
        if dropped:
            with self._stats_lock:
                self._counts["discarded"] += dropped
            self._notify(BarsDiscarded(first, dropped))
        log.info("controls %s from bar seq %d (%d queued bars dropped)", controls, first, dropped)
        return entry

    def request_cut(self, controls: Controls, seq: int, from_beats: int) -> Optional[ScheduleEntry]:
        """A genre/mood change from `from_beats` into bar `seq`, which plays (a beat switch): the rest of that
        bar is written again under `controls`, then the bars after it. None if the queue refuses
        (`BarQueue.cut_at`: that bar no longer plays, or is still being written): ask `request` instead."""
        controls.check(self.vocab)
        with self._lock:  # then the queue's, as in `request`
            last = self._schedule.last
            if controls.conditions == last.controls.conditions:
                return None
            dropped = self.queue.cut_at(seq, from_beats, written_upto=self._generating)
            if dropped is None:
                return None
            self._switches += 1
            entry = ScheduleEntry(seq, controls, self._switches, self.clock.now())
            self._schedule = self._schedule.with_entry(entry)
        if dropped:
            with self._stats_lock:
                self._counts["discarded"] += dropped
            self._notify(BarsDiscarded(seq + 1, dropped))
        log.info("controls %s from beat %d of bar seq %d (%d queued bars dropped)", controls, from_beats, seq, dropped)
        return entry

    def stats(self) -> GeneratorStats:
        with self._stats_lock:
            recent = list(self._recent)
            counts = dict(self._counts)
        tokens = sum(r[0] for r in recent)
        gen_s = sum(r[1] for r in recent)
        bar_s = sum(r[2] for r in recent)
        return GeneratorStats(
            bars=counts["bars"], tokens=counts["tokens"], tokens_per_s=tokens / gen_s if gen_s > 0 else 0.0,
            real_time_factor=bar_s / gen_s if gen_s > 0 else 0.0, estimated_bar_s=self.estimated_bar_s(),
            estimated_head_s=self.estimated_head_s(),
            reanchors=counts["reanchors"], rollbacks=counts["rollbacks"], discarded_bars=counts["discarded"],
            forced_bar_ends=counts["forced"], failures=counts["failures"], guidance=self.decoder.guidance)

    def _recent_column(self, index: int) -> list[float]:
        """One figure of the last 8 bars written (see `_recent`)."""
        with self._stats_lock:
            return [r[index] for r in list(self._recent)[-8:]]

    def estimated_bar_s(self) -> float:
        """A cautious guess of how long the next bar takes to write: the slowest of the recent bars."""
        return max(self._recent_column(1), default=0.5)

    def _pace(self) -> float:
        """The lowest real-time factor of the recent bars (inf before any): whether a bar can play while
        it is written without catching up with the generator."""
        factors = [bar_s / generate_s for generate_s, bar_s in zip(self._recent_column(1), self._recent_column(2))
                   if generate_s > 0]
        return min(factors, default=math.inf)

    def estimated_head_s(self) -> float:
        """A cautious guess of the time from starting a bar until it may start playing (its start tempo known,
        at its first note: see `LiveBar.ready`): the slowest of the recent bars."""
        return max(self._recent_column(3), default=0.5)

    # ---- the thread ------------------------------------------------------------------------------
    def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set() and not self.queue.closed:
                try:
                    rollback, cut = self.queue.take_rollback_cut()
                    fragment = None
                    if rollback is not None:
                        fragment = self._fragment_start(cut) if cut is not None else None
                        self._rollback_to(rollback if cut is None or fragment is not None else rollback + 1)
                    bar = self._write_bar(self._seq, fragment)
                    accepted, playing = self.queue.finish(self._live, bar, self._stop)
                    self._live = None
                    if accepted:
                        self._seq = bar.seq + 1
                        self._notify(BarQueued(bar, len(self.queue), playing))
                    failures = 0
                    if self._trim_heap is not None:
                        self._trim_heap(0)
                except _Abort:
                    self.queue.abandon(self._live)
                    self._live = None
                    continue
                except Exception as err:  # report, silence (on_failure), resume from the last good bar
                    self.queue.abandon(self._live)
                    self._live = None
                    failures += 1
                    with self._stats_lock:
                        self._counts["failures"] += 1
                    fatal = failures >= self.config.max_failures
                    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    log.exception("generator failed (%d in a row)", failures)
                    self._notify(GeneratorFailed(f"generator error: {type(err).__name__}: {text}", fatal))
                    if self._on_failure is not None:
                        self._on_failure(err)
                    if fatal or not self._recover():
                        break
        finally:
            self.finished.set()

    def _recover(self) -> bool:
        """After an error: continue right after the last bar written, with the cache rebuilt."""
        try:
            self._rollback_to(self._history[-1].seq + 1, rebuild=True)
            return True
        except Exception as err:
            log.exception("generator could not recover")
            self._notify(GeneratorFailed(f"generator error: cannot recover: {type(err).__name__}: {err}", True))
            return False

    def _fragment_start(self, cut: Cut) -> Optional[tuple[Cut, FragmentStart, Optional[float]]]:
        """(cut, how the rest of the bar opens, the tempo in force at the cut) for the bar `cut` names, read
        before the rollback drops it; None when that bar cannot be cut there (then it plays on, and the switch
        starts with the next bar)."""
        record = next((r for r in self._history if r.seq == cut.seq), None)
        if record is None and self._cut_record is not None and self._cut_record.seq == cut.seq:
            record = self._cut_record  # a second cut of a bar whose first rest was dropped unfinished
        if record is None:
            return None
        self._cut_record = record
        start = switching.fragment_start(self.table, record.tokens, cut.from_beats)
        if start is None:
            log.warning("bar seq %d cannot be cut at beat %d: the switch starts with the next bar", cut.seq,
                        cut.from_beats)
            return None
        return cut, start, start.tempo_qpm if start.tempo_qpm is not None else record.carried_qpm

    def _write_bar(self, seq: int, fragment: Optional[tuple[Cut, FragmentStart, Optional[float]]] = None) -> Bar:
        """Write bar `seq` under the controls that govern it; with `fragment`, only its rest from a cut (a beat
        switch): the bar's TimeSig is forced, then a Position from the cut on (`GrammarState.from_position`;
        not `Bar`: the default model, fed a bar that may only start mid-way, mostly ended it at once), and no
        Tempo token but the one the bar had (`_tempo_mask`)."""
        self.queue.quiet.pause()  # the scheduler is about to send: keep off the GIL (`QuietWindow`)
        with self._lock:
            self._generating = seq
            self._schedule = self._schedule.pruned(self.queue.next_to_play())  # bounded memory
            entry = self._schedule.at(seq)
        controls = entry.controls
        prev = self._history[-1]
        self._ensure_guidance(controls)
        decoder, w = self.decoder, self._guidance_w(seq, entry)
        start = switching.bar_start(self.vocab, prev.conditions, controls.conditions, every_bar=self.bar_conditions,
                                    empty_context=decoder.length == 0, guided=decoder.guidance,
                                    context_bars=self.config.switch_context_bars,
                                    negative=self.config.switch_negative)
        prefix, negative = start.prefix, start.negative
        first_of_switch = prev.switch_id != entry.switch_id or prev.seq < 0
        cut_beats = None if fragment is None else fragment[0].from_beats
        live = LiveBar(seq, controls.conditions, entry.switch_id, entry.requested_s if first_of_switch else None,
                       self._pace(), cut_beats=cut_beats)
        carried, tempo_mask = prev.bar_state, None
        if fragment is not None:
            _, head, qpm = fragment
            prefix = prefix + [head.timesig_id]
            if negative is not None:
                negative = negative + decoder.unconditioned(prefix[len(negative):])
            carried = replace(carried, tempo_qpm=qpm)
            tempo_mask = self._tempo_mask(head.tempo_id)
        builder = BarBuilder(self.table, carried, self.config.bar)
        self._live = live
        if fragment is None:
            self.queue.offer(live)
        else:
            self.queue.offer_fragment(live)
        started_s = time.perf_counter()
        head_s = None
        if start.afresh:
            logits = self._reanchor(prefix, controls.conditions, w, max_bars=start.context_bars,
                                    negative=negative)
        elif decoder.length + len(prefix) + self.reserve_tokens > decoder.capacity:
            logits = self._reanchor(prefix, controls.conditions, w, negative=negative)
        else:
            logits = decoder.prefill(prefix, w, negative)
        state = prev.grammar.advance_all(prefix)
        if fragment is not None:
            state = state.from_position(fragment[1].first_position)
        tokens = list(prefix)
        for token in prefix:
            builder.feed(token)
        forced = False
        bar_id = self.vocab.bar_id
        # the first bar under new conditions, and the rest of a cut bar (the model would mostly end it at once),
        # end only after a note
        needs_note = first_of_switch or fragment is not None
        limit = self.max_bar_tokens  # until the TimeSig is read; then per beat as well (`bar_token_limit`)
        limited = False
        from model.sampling import sample

        quiet = self.queue.quiet
        while True:
            quiet.pause()  # the scheduler is about to send: keep off the GIL (`QuietWindow`)
            if self._stop.is_set() or self.queue.rolled_back(seq):
                raise _Abort()
            if not limited and builder.started:
                limit = bar_token_limit(self.max_bar_tokens, self.config.max_tokens_per_beat,
                                        builder.length_beats - (cut_beats or 0))
                limited = True
            if len(tokens) >= limit and state.at_bar_boundary:
                forced = True
                break
            allowed = state.allowed()
            if tempo_mask is not None and state.kind == AFTER_POSITION:
                allowed = allowed & tempo_mask
            if needs_note and allowed[bar_id]:
                if builder.notes:
                    needs_note = False
                elif (allowed & self._no_bar).any():
                    allowed = allowed & self._no_bar
            token = sample(logits, controls.temperature, controls.top_k, controls.top_p, self.rng, allowed)
            if token == bar_id:
                break
            state = state.advance(token)
            tokens.append(token)
            if builder.feed(token):
                live.publish(builder)
                if head_s is None and builder.start_tempo_qpm is not None:  # `LiveBar.ready` from here on
                    head_s = time.perf_counter() - started_s
            if decoder.length >= decoder.capacity:
                logits = self._reanchor(tokens, controls.conditions, w)
            else:
                logits = decoder.decode_one(token, w)
        generate_s = time.perf_counter() - started_s

        messages, bar_state = builder.finish()
        live.publish(builder)
        record = _Record(seq, tuple(tokens), controls.conditions, decoder.length, state, bar_state,
                         self.rng.get_state(), entry.switch_id, carried.tempo_qpm)
        self._history.append(record)
        while len(self._history) > self.config.history_bars:
            self._history.popleft()
        qpm = controls.bpm or messages.tempo_qpm
        with self._stats_lock:
            self._recent.append((len(tokens), generate_s, (messages.length_beats - (cut_beats or 0)) * 60.0 / qpm,
                                 generate_s if head_s is None else head_s))
            self._counts["bars"] += 1
            self._counts["tokens"] += len(tokens)
            self._counts["forced"] += forced
        return Bar(seq, messages, tuple(tokens), controls.conditions, entry.switch_id,
                   entry.requested_s if first_of_switch else None, generate_s, cut_beats)

    def _tempo_mask(self, tempo_id: Optional[int]) -> torch.Tensor:
        """(V,) bool: every token but the Tempo tokens, and `tempo_id` (None: no Tempo at all) — the rest of a
        cut bar keeps the tempo the bar had there."""
        mask = torch.ones(self.vocab.vocab_size, dtype=torch.bool)
        mask[[i for i, kind in enumerate(self.table.kinds) if kind == TEMPO]] = False
        if tempo_id is not None:
            mask[tempo_id] = True
        return mask

    # ---- cache management ------------------------------------------------------------------------
    def _context(self, limit: int, tail_conditions: Optional[Conditions], tail_has_block: bool,
                 max_bars: Optional[int] = None):
        """The newest finished bars (at most `max_bars`) whose tokens fit in `limit` (oldest first) and the
        conditioning block to put in front of them when the first has none: returns (lead ids, records).
        `tail_*` describe what will follow the bars (the bar being written, if any)."""
        used: list[_Record] = []
        total = 0
        for record in reversed(self._history):
            if record.seq < 0 or total + len(record.tokens) > limit - 2 or len(used) == max_bars:
                break
            used.append(record)
            total += len(record.tokens)
        used.reverse()
        lead: list[int] = []
        if used and not self.vocab.is_condition(used[0].tokens[0]):
            lead = self.vocab.condition_ids(used[0].conditions)
        elif not used and not tail_has_block and tail_conditions is not None:
            lead = self.vocab.condition_ids(tail_conditions)
        return lead, used

    def _place(self, lead: int, used: list[_Record]) -> None:
        """Record where each bar of `used` ends in the freshly built cache; the others are gone from it."""
        ends: dict[int, int] = {}
        position = lead
        for record in used:
            position += len(record.tokens)
            ends[record.seq] = position
        self._history = deque(replace(r, cache_end=ends.get(r.seq, 0 if r.seq < 0 else None))
                              for r in self._history)

    def _reanchor(self, tail: list[int], conditions: Conditions, guidance_w: float,
                  max_bars: Optional[int] = None, negative: Optional[list[int]] = None) -> torch.Tensor:
        """Rebuild the cache as recent bars (at most `max_bars`) + `tail` (the bar being written); return the
        next logits. With `GeneratorConfig.slide` and the cache as expected, the kept bars and the tail's
        cached tokens stay (`Decoder.slide`); else they are computed again (`Decoder.reanchor`). `negative`:
        the guidance row's reading of the start of `tail` (see `Decoder.prefill`)."""
        tail_has_block = bool(tail) and self.vocab.is_condition(tail[0])
        lead, used = self._context(self.reanchor_tokens - len(tail), conditions, tail_has_block, max_bars)
        start = self._kept_from(used, len(tail)) if self.config.slide else None
        if start is not None:
            cached = self.decoder.length - self._history[-1].cache_end  # the tail's tokens in the cache
        self._place(len(lead), used)
        with self._stats_lock:
            self._counts["reanchors"] += 1
        log.debug("re-anchor (%s): %d bars + %d tokens of the current bar", "slide" if start is not None else "prefill",
                  len(used), len(tail))
        kept = lead + [t for r in used for t in r.tokens]
        tail_negative = None
        if negative is not None:
            tail_negative = list(negative) + self.decoder.unconditioned(tail[len(negative):])
        if start is not None:
            return self.decoder.slide(start, lead, tail[cached:], guidance_w,
                                      None if tail_negative is None else tail_negative[cached:])
        kept_negative = None if tail_negative is None else self.decoder.unconditioned(kept) + tail_negative
        return self.decoder.reanchor(kept + list(tail), guidance_w, kept_negative)

    def _kept_from(self, used: list[_Record], tail_length: int) -> Optional[int]:
        """Where `used` (the newest bars) starts in the cache, if the cache ends with exactly those bars and
        then some of the tail's tokens, not all of them; else None."""
        previous_end = self._history[-1].cache_end
        if previous_end is None or not 0 <= self.decoder.length - previous_end < tail_length:
            return None
        if not used:
            return previous_end
        if used[-1] is not self._history[-1] or used[0].cache_end is None:
            return None
        start = used[0].cache_end - len(used[0].tokens)
        if start < 0 or previous_end - start != sum(len(r.tokens) for r in used):
            return None
        return start

    def _rebuild(self) -> None:
        """Refill the cache with the recent bars up to the newest kept one (after an error, a rollback past
        a re-anchor, or a new decoder)."""
        lead, used = self._context(self.reanchor_tokens, None, False)
        self._place(len(lead), used)
        if used:
            self.decoder.reanchor(lead + [t for r in used for t in r.tokens], self.controls.guidance_w)
        else:
            self.decoder.truncate(0)

    def _rollback_to(self, seq: int, rebuild: bool = False) -> None:
        """Continue as if bar `seq - 1` had just been written."""
        while len(self._history) > 1 and self._history[-1].seq >= seq:
            self._history.pop()
        target = self._history[-1]
        if target.seq != seq - 1:
            log.warning("rollback to bar %d: only bar %d is known; continuing from it", seq, target.seq)
        if not rebuild and target.cache_end is not None and target.cache_end <= self.decoder.length:
            self.decoder.truncate(target.cache_end)
        else:
            self._rebuild()
        self.rng.set_state(target.rng_state)
        self._seq = target.seq + 1
        with self._lock:
            self._generating = self._seq
        with self._stats_lock:
            self._counts["rollbacks"] += 1

    def _guidance_w(self, seq: int, entry: ScheduleEntry) -> float:
        """The guidance weight for bar `seq` (`switching.guidance_w`: boosted for the first bars of a switch)."""
        boost = self.config.switch_guidance_w
        if boost is None or entry.switch_id == 0 or not self.decoder.guidance:
            return entry.controls.guidance_w
        first = min((r.seq for r in self._history if r.switch_id == entry.switch_id), default=seq)
        return switching.guidance_w(seq, first, entry.controls.guidance_w, boost, self.config.switch_boost_bars)

    def _ensure_guidance(self, controls: Controls) -> None:
        """Switch to a guided decoder (two rows per step) the first time guidance ≠ 1 is asked for."""
        if controls.guidance_w == 1.0 or self.decoder.guidance:
            return
        from model.engine import Decoder

        log.info("guidance %.2f requested: decoding the unconditioned row too from now on", controls.guidance_w)
        self.decoder = Decoder(self.model, guidance=True, vocab=self.vocab, capacity=self.decoder.capacity,
                               mood_negative=self.config.mood_negative)
        self._rebuild()
