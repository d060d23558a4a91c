"""The queue between the generator and the scheduler: finished bars (`BarQueue`), the bar being written
(`LiveBar`), which the scheduler may start before it is finished, the rest of a bar cut by a beat switch (a
`LiveBar` with `cut_beats`), and the `QuietWindow` that keeps the generator off the GIL while a real-time
scheduler thread is about to send.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Optional

from model.vocab import Conditions
from streamer.bars import Bar, Note, TimedMessage
from streamer.switching import Cut


class LiveBar:
    """The bar the generator is writing, offered to the scheduler so that it can start on time when no
    finished bar is waiting (a dense bar, or the first bar after a switch). Messages come out as the bar is
    sampled (`streamer.bars.BarBuilder`: REMI is in time order) and every message below `frontier_beats`
    is already out, so the scheduler plays up to the frontier and waits there (what is written at the
    frontier goes once due: the rest of that beat can only come later); `complete(bar)` ends it.
    The generator writes, the scheduler reads; the bar's own lock guards both sides. Whether the scheduler
    has started it is the queue's to know (`BarQueue.playing`)."""

    def __init__(self, seq: int, conditions: Conditions, switch_id: int, requested_s: Optional[float],
                 pace: float = math.inf, cut_beats: Optional[int] = None):
        self.seq = seq
        self.cut_beats = cut_beats  # the rest of bar `seq` from this beat on (a beat switch); None: a whole bar
        self.pace = pace  # the generator's recent real-time factor (slowest recent bar); < 1: it would stall
        self.conditions = conditions
        self.switch_id = switch_id
        self.requested_s = requested_s
        self.length_beats = 4.0
        self.tempo_qpm: Optional[float] = None  # at the bar line, once known
        self._lock = threading.Lock()
        self._messages: list[TimedMessage] = []  # in the order they were made
        self._notes: tuple[Note, ...] = ()
        self._frontier_beats = 0.0
        self._started = False
        self.bar: Optional[Bar] = None  # the finished bar (after `complete`; None if abandoned)
        self._wake: Optional[threading.Event] = None

    # generator side
    def publish(self, builder) -> None:
        """Hand out what `builder` (a BarBuilder) made since the last call."""
        with self._lock:
            self._messages.extend(builder.take())
            self._frontier_beats = builder.frontier_beats
            self._notes = builder.notes
            if not self._started and builder.started:
                self._started, self.length_beats = True, builder.length_beats
            self.tempo_qpm = builder.start_tempo_qpm
            wake = self._wake
        if wake is not None:
            wake.set()

    def complete(self, bar: Optional[Bar]) -> None:
        """The bar is finished (`bar`; publish its last messages first) or abandoned (None: the rest of it
        stays silent)."""
        with self._lock:
            if bar is not None:
                self._notes = bar.messages.notes
            self.bar = bar
            self._frontier_beats = math.inf
            wake = self._wake
        if wake is not None:
            wake.set()

    # scheduler side
    @property
    def ready(self) -> bool:
        """Its length and start tempo are known (the start tempo is, once a note at the bar line or a later
        Position is read), and the generator writes faster than the music plays (else playing it would stall
        mid-bar: better a silent bar, in time). The bar line's other notes may still be coming: the scheduler
        sends each as it is written, late rather than a bar later (see `Scheduler._beyond_frontier`)."""
        with self._lock:
            return self._started and self.tempo_qpm is not None and self.pace >= 1.0

    def attach(self, wake: threading.Event) -> None:
        with self._lock:
            self._wake = wake

    def since(self, count: int) -> tuple[list[TimedMessage], float, tuple[Note, ...]]:
        """(messages made after the first `count`, frontier in beats from the bar line, notes so far)."""
        with self._lock:
            return self._messages[count:], self._frontier_beats, self._notes

    @property
    def notes(self) -> tuple[Note, ...]:
        """The notes written so far (all of them once finished), as played."""
        with self._lock:
            return self._notes

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._frontier_beats == math.inf


class QuietWindow:
    """Keeps the generator's Python off the GIL while the real-time scheduler thread is about to send.

    The GIL is one lock for every thread: a thread the OS preempts while it holds it (a busy machine) keeps
    the scheduler waiting for the rest of a time slice, however high the scheduler's own priority. So the
    scheduler `close()`s the window shortly before a due time and `open()`s it once the messages are out,
    and the generator calls `pause()` before each token and each bar: while the window is closed it waits
    there (GIL released), at most `max_wait_s` each time, so no mistake here can stall it for longer. Nor
    does the scheduler wake another thread meanwhile (news and the queue's room wait for the window to open).
    """

    def __init__(self, max_wait_s: float = 0.005):
        self.max_wait_s = max_wait_s
        self._open = threading.Event()
        self._open.set()

    # scheduler side
    def close(self) -> None:
        if self._open.is_set():
            self._open.clear()

    def open(self) -> None:
        if not self._open.is_set():
            self._open.set()

    @property
    def closed(self) -> bool:
        return not self._open.is_set()

    # generator side
    def pause(self) -> None:
        if not self._open.is_set():
            self._open.wait(self.max_wait_s)


class BarQueue:
    """Bars generated but not yet started, oldest first; at most `size` (the lookahead, in bars).

    The queue owns what the generator and the scheduler must agree on, under its one lock (private to it):
    the queued bars, the newest bar started, the live bar playing and a pending rollback. So a switch can
    throw away exactly the bars that have not started: `switch_from(seq, written_upto)` moves the switch to
    the first bar not started, removes queued bars from there on and leaves a rollback mark that makes
    `put` refuse such bars until the generator takes the mark (`take_rollback_cut`).
    The bar being written is offered too (`offer`): when no finished bar waits, `take(wait=False)` starts it
    as a `LiveBar` once it is ready; `finish` then completes it instead of queueing it. `quiet` is the
    `QuietWindow` the generator pauses at while the scheduler sends; while it is closed, `take` does not
    wake the generator (`end_quiet` does).
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"lookahead = {size!r} bars must be ≥ 1")
        self.size = size
        self._cond = threading.Condition()
        self._bars: deque[Bar] = deque()
        self._last_started_seq = -1
        self._rollback_seq: Optional[int] = None
        self.closed = False
        self._writing: Optional[LiveBar] = None  # offered by the generator, not started
        self._playing: Optional[LiveBar] = None  # the last bar the scheduler started while it was written
        self.quiet = QuietWindow()
        self._writer_pending = False  # `take` made room while the quiet window was closed
        self._cut: Optional[Cut] = None  # a beat switch's cut, for the generator (taken with its rollback)
        self.fragment: Optional[LiveBar] = None  # the rest of a cut bar, offered to the scheduler (read unlocked)
        self._scheduler_wake: Optional[threading.Event] = None

    def attach(self, wake: threading.Event) -> None:
        """The scheduler's wake-up: set when the rest of a cut bar is offered."""
        with self._cond:
            self._scheduler_wake = wake

    def offer(self, live: LiveBar) -> None:
        """The generator starts writing `live`: the scheduler may start it before it is finished."""
        with self._cond:
            self._writing = live

    @property
    def writing(self) -> Optional[LiveBar]:
        """The bar being written and not started yet, if the generator offered it."""
        with self._cond:
            return self._writing

    def finish(self, live: LiveBar, bar: Bar, stop: Optional[threading.Event] = None) -> tuple[bool, bool]:
        """`live` is written as `bar`: complete it if it is playing, else queue `bar` (waiting for room); the
        rest of a cut bar that the scheduler did not take (its bar ended first) is dropped, and the generator
        goes on after it. Returns (accepted, playing)."""
        with self._cond:
            if self._writing is live:
                self._writing = None
            if self.fragment is live:
                self.fragment = None
            if self._playing is live:
                live.complete(bar)
                return True, True
            if live.cut_beats is not None:
                return not self.rolled_back(bar.seq), False
        return self.put(bar, stop), False

    def offer_fragment(self, live: LiveBar) -> None:
        """The generator starts writing the rest of a cut bar (`live.cut_beats`): the scheduler takes it
        (`take_fragment`) and plays it over the bar playing from the cut on."""
        with self._cond:
            self.fragment = live
            wake = self._scheduler_wake
        if wake is not None:
            wake.set()

    def take_fragment(self) -> Optional[LiveBar]:
        """The rest of a cut bar offered since the last call, marked playing (the scheduler checks it is for
        the bar playing, and `reject_fragment`s it if not); None if none."""
        with self._cond:
            live, self.fragment = self.fragment, None
            if live is not None:
                self._playing = live
            return live

    def reject_fragment(self, live: LiveBar) -> None:
        """The scheduler did not take `live` (its bar has ended or the cut has passed): the generator drops it."""
        with self._cond:
            if self._playing is live:
                self._playing = None

    def abandon(self, live: Optional[LiveBar]) -> None:
        """The generator dropped `live` (a switch, a stop or an error): if it is playing, its rest is silent."""
        if live is None:
            return
        with self._cond:
            if self._writing is live:
                self._writing = None
            if self.fragment is live:
                self.fragment = None
            if self._playing is live and not live.finished:
                live.complete(None)

    def put(self, bar: Bar, stop: Optional[threading.Event] = None) -> bool:
        """Queue `bar`, waiting while the queue is full; False if it was refused (rollback, closed, stop)."""
        with self._cond:
            while True:
                if self.closed or (stop is not None and stop.is_set()):
                    return False
                if self._rollback_seq is not None and bar.seq >= self._rollback_seq:
                    return False
                if len(self._bars) < self.size:
                    break
                self._cond.wait(0.1)
            self._bars.append(bar)
            self._cond.notify_all()
            return True

    def take(self, wait: bool, stop: Optional[threading.Event] = None) -> Optional[Bar | LiveBar]:
        """The next bar, marked started; None if there is none (and `wait` is False, or on close/stop).
        Without `wait`, the bar being written is started as a `LiveBar` when it is the next one and ready."""
        with self._cond:
            while not self._bars:
                live = self._writing
                if (not wait and live is not None and live.seq == self._last_started_seq + 1 and live.ready
                        and (self._rollback_seq is None or self._rollback_seq > live.seq) and not self.closed):
                    self._playing = live
                    self._writing = None
                    self._last_started_seq = live.seq
                    self._notify_writer()
                    return live
                if not wait or self.closed or (stop is not None and stop.is_set()):
                    return None
                self._cond.wait(0.05)
            return self._start_queued()

    def take_queued(self) -> Optional[Bar]:
        """The next bar, marked started, if a finished one is queued (never the bar being written); else None."""
        with self._cond:
            return self._start_queued() if self._bars else None

    def _start_queued(self) -> Bar:
        """Pop the oldest queued bar and mark it started (`_cond` held)."""
        bar = self._bars.popleft()
        self._last_started_seq = bar.seq
        self._notify_writer()
        return bar

    def _notify_writer(self) -> None:
        """Wake the generator waiting on `_cond` (held) — once the quiet window opens, if it is closed."""
        if self.quiet.closed:
            self._writer_pending = True
        else:
            self._cond.notify_all()

    def end_quiet(self) -> None:
        """Open the quiet window, and wake the generator if `take` put that off."""
        self.quiet.open()
        if self._writer_pending:
            with self._cond:
                self._writer_pending = False
                self._cond.notify_all()

    def next_to_play(self) -> int:
        """The seq of the first bar not started yet."""
        with self._cond:
            return self._last_started_seq + 1

    def playing(self, live: LiveBar) -> bool:
        """Whether the scheduler started `live` while it was being written."""
        with self._cond:
            return self._playing is live

    def switch_from(self, seq: int, written_upto: int) -> tuple[int, int]:
        """A switch to start at bar `seq`, with bars up to `written_upto` written or being written: it moves to
        the first bar not started if the scheduler has passed `seq` meanwhile; queued bars from there on are
        thrown away and, if any bar from there on is written, a rollback is marked. Returns (the seq the
        switch starts at, how many queued bars were dropped)."""
        with self._cond:
            seq = max(seq, self._last_started_seq + 1)
            if seq > written_upto:
                return seq, 0
            kept = deque(b for b in self._bars if b.seq < seq)
            dropped = len(self._bars) - len(kept)
            self._bars = kept
            self._rollback_seq = seq if self._rollback_seq is None else min(self._rollback_seq, seq)
            self._cond.notify_all()
            return seq, dropped

    def cut_at(self, seq: int, from_beats: int, written_upto: int) -> Optional[int]:
        """A beat switch cutting bar `seq` `from_beats` after its line: only while `seq` is the newest bar
        started and the generator has finished it (`written_upto` > seq). Every queued bar is thrown away,
        a rollback to `seq` is marked and the cut waits for the generator (`take_rollback_cut`). Returns how
        many queued bars were dropped; None if refused (the switch then lands as a bar switch)."""
        with self._cond:
            playing = self._playing
            if seq != self._last_started_seq or written_upto <= seq or self.closed or (
                    playing is not None and playing.seq == seq and not playing.finished):
                return None
            dropped = len(self._bars)
            self._bars = deque()
            self._rollback_seq = seq
            self._cut = Cut(seq, from_beats)
            self._cond.notify_all()
            return dropped

    def rolled_back(self, seq: int) -> bool:
        """Whether a rollback to bar `seq` or before is pending (the generator asks before each token: one
        attribute read, no lock)."""
        rollback = self._rollback_seq
        return rollback is not None and rollback <= seq

    def take_rollback_cut(self) -> tuple[Optional[int], Optional[Cut]]:
        """The pending rollback (the first bar to write again) and, for a beat switch, its cut, taken as one."""
        with self._cond:
            seq, self._rollback_seq = self._rollback_seq, None
            cut, self._cut = self._cut, None
            return seq, cut if cut is not None and cut.seq == seq else None

    def queued(self) -> list[Bar]:
        with self._cond:
            return list(self._bars)

    def __len__(self) -> int:
        with self._cond:
            return len(self._bars)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
