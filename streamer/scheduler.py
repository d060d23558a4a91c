"""The scheduler thread: plays queued bars on an absolute-time clock; it alone calls `Output.send`.

Time is counted in quarter-note beats. A timebase maps beats to clock seconds: `InternalTimebase` follows
the tempo the bars carry, re-anchored at each tempo change, so error never accumulates; `ExternalTimebase`
follows MIDI clock from another device. Events run in (beat, note-off → setup → note-on, arrival) order.
At each bar line the next bar is taken from the `BarQueue` — or the bar being written (`LiveBar`), played up
to the point the generator has reached (notes of the beat it is writing go as they come once due); none
ready = an underrun, counted and bridged with a silent bar of the same length. A beat switch's rest of the
bar playing (`BarQueue.take_fragment`) cuts it: the old messages from the cut on go, every old note ends
there (`switching.cut_events`), and the rest plays from there as it is written. Sounding notes are tracked,
so stop, panic, pause and failures send every note_off, then CC123/CC120 on all channels. Runs the same on
`FakeClock` (tests, renders). The queue it reads is `streamer.barqueue`, the news it sends `streamer.news`.

Longer than most modules here: it is one thread's loop, and its parts (bar lines, dispatch, the quiet window,
MIDI clock, outputs failing and coming back) all read and write that thread's state.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import mido

from streamer.barqueue import BarQueue, LiveBar
from streamer import switching
from streamer.bars import ORDER_NOTE_OFF, ORDER_SETUP, Bar, TimedMessage, tempo_override, tempo_qpm
from streamer.clock import CLOCKS_PER_BEAT, Clock, InternalTimebase, MonotonicClock
from streamer.gcpacing import PacedCollector
from streamer.news import (BarNotes, BarStarted, OutputFailed, OutputRecovered, PlaybackStopped, SwitchApplied,
                           SwitchSounded, Underrun)
from streamer.outputs.base import Output
from streamer.rt import RT_MODES, raise_thread_priority, restore_thread_priority

# mido validates every field of every message it builds or copies with overrides (~10-20 µs a message here):
# the scheduler's messages are valid by construction, so its hot path builds and stamps them unchecked.
_CLOCK = mido.Message("clock")


def stamped(msg: mido.Message, beat: float) -> mido.Message:
    """A copy of `msg` with `time` = `beat` (a float ≥ 0: valid), made without mido's checks: `copy()`
    without overrides copies the fields unchecked, and `time` is written past the checking setter (which
    alone took about a third of the scheduler's time per message: an ABC isinstance test per field)."""
    out = msg.copy()
    vars(out)["time"] = beat
    return out


class _SwitchMark:
    """An event in the scheduler's heap, not a message: a beat switch applies here (news, no send)."""

    type = "switch_mark"

    def __init__(self, news: object):
        self.news = news


log = logging.getLogger(__name__)

BAR_LEAD_S = 0.01  # on the real clock a bar already queued starts this long before its line: taking it and
#                    scheduling its messages can take milliseconds of Python on a slow core, which the line's
#                    first notes would otherwise wait for. Too short for any switch or tempo change to land in.
QUIET_LEAD_S = 0.003  # a real-time scheduler thread pauses the generator this long before each due time: the
#                      clock's last stretch (1 ms), and the rest of a token the OS may preempt it in (`QuietWindow`)

@dataclass(frozen=True)
class SchedulerStats:
    bars_played: int
    bar_number: int
    position_beats: float
    tempo_qpm: float
    underruns: int
    live_bars: int  # bars that started while still being written (they play as they are written)
    messages_sent: int
    late_messages: int  # sent more than SchedulerConfig.late_ms after their due time
    send_error_p50_ms: float
    send_error_p99_ms: float
    send_error_max_ms: float
    switch_latency_ms: tuple[float, ...]  # recent switches: control change → first note
    outputs: dict[str, str] = field(default_factory=dict)  # name → "ok" / "failed: ..." / "closed"
    realtime_priority: str = "none"  # what the thread runs at: "fifo" (SCHED_FIFO), "nice" (−10) or "none"


@dataclass(frozen=True)
class SchedulerConfig:
    wait_for_bars: bool = False  # True: a bar line waits for its bar (renders); False: underrun → silent bar
    start_delay_s: float = 0.05  # the first bar line comes this long after the first bar is ready
    late_ms: float = 5.0  # a message sent later than this counts as late
    midi_clock: bool = True  # send MIDI clock to outputs that want it (internal sync only)
    max_bars: Optional[int] = None  # stop at the bar line after this many bars have played
    error_window: int = 20_000  # send errors kept for the percentiles
    rt_priority: str = "auto"  # on the real clock: "auto" = SCHED_FIFO where permitted (else nice), "off" = nice

    def __post_init__(self):
        if self.rt_priority not in RT_MODES:
            raise ValueError(f"rt_priority = {self.rt_priority!r}: use one of {', '.join(RT_MODES)}")
        if self.start_delay_s < 0:
            raise ValueError(f"start_delay_s = {self.start_delay_s!r} must be ≥ 0")
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError(f"max_bars = {self.max_bars!r} must be ≥ 1")
        if self.late_ms <= 0:
            raise ValueError(f"late_ms = {self.late_ms!r} must be > 0")


class SoundingNotes:
    """How many note_ons are sounding per (channel, key): a key sounds until its last note ends."""

    def __init__(self):
        self.counts: dict[tuple[int, int], int] = {}

    def on(self, channel: int, note: int) -> bool:
        """Count a note_on; True if the key was already sounding (retrigger: send a note_off first)."""
        key = (channel, note)
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        return count > 0

    def off(self, channel: int, note: int) -> bool:
        """Count a note_off; True if the key is now silent (send it), False if another note holds it."""
        key = (channel, note)
        count = self.counts.get(key, 0)
        if count <= 1:
            self.counts.pop(key, None)
            return count == 1
        self.counts[key] = count - 1
        return False

    def clear(self) -> list[tuple[int, int]]:
        keys = sorted(self.counts)
        self.counts.clear()
        return keys

    def __len__(self) -> int:
        return len(self.counts)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[index]


# ---- the scheduler --------------------------------------------------------------------------------------
class BarLine(NamedTuple):
    """The last bar line, set as one for other threads to read."""

    number: int  # its playback bar number
    started: int  # seq of the newest bar started (an underrun's silent bar keeps the one before)
    beat: float  # where it is, in beats
    length: Optional[float]  # the bar's length in beats; None for an underrun's silent bar


class Scheduler:
    """Plays bars from `queue` to `outputs` on `clock` (see the module docstring).

    Thread-safe controls: `stop()`, `panic()`, `set_bpm(bpm | None)` (from the next bar line),
    `add_output(o)`, `remove_output(name)`, `stats()`, `seconds_to_next_bar()`. `run()` is the thread
    body; `start()` runs it in a daemon thread. `notify(news)` must not block.
    """

    def __init__(self, queue: BarQueue, outputs: Sequence[Output], clock: Clock,
                 config: SchedulerConfig = SchedulerConfig(), timebase=None,
                 notify: Optional[Callable[[object], None]] = None):
        self.queue = queue
        self.clock = clock
        self.config = config
        self.timebase = timebase or InternalTimebase(clock)
        self._deliver = notify or (lambda news: None)
        self._held_news: list[object] = []  # news made while the quiet window is closed
        self._outputs: list[Output] = list(outputs)
        self._broken: list[Output] = []  # outputs that failed (closed at the end; some may come back)
        self._failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        if hasattr(self.timebase, "attach"):
            self.timebase.attach(self._wake)
        self.queue.attach(self._wake)
        self.finished = threading.Event()
        self.started = threading.Event()  # the first bar line has been scheduled
        self._commands: deque[Callable[[], None]] = deque()
        self._thread: Optional[threading.Thread] = None
        self._bpm: Optional[float] = None
        self._midi_clock = config.midi_clock
        self.sounding = SoundingNotes()
        self._programs: dict[int, int] = {}  # channel → program, as sent
        self._heap: list[tuple[float, int, int, mido.Message, int]] = []  # (beat, order, n, msg, bar_number)
        self._live: Optional[LiveBar] = None  # the bar playing while the generator still writes it
        self._live_count = 0  # its messages pushed so far
        self._live_bpm: Optional[float] = None  # the tempo override it started under
        self._live_bars = 0
        self._live_from = 0.0  # beats from the bar line before which the live bar's messages are left out (a cut)
        self._bar_notes: tuple = ()  # the notes of the bar playing, as it started
        self._n = 0
        self._next_bar_beat = 0.0
        self._bar_start_beat = 0.0
        self._bar_length = 4.0
        self._bar_number = -1
        self._bar_line_now: Optional[BarLine] = None
        self._bars_played = 0
        self._tick_index = 0
        self._last_beat = 0.0
        self._switch_id = 0
        self._pending_first_note: Optional[tuple[int, float, int, float]] = None  # switch, requested_s, bar, beat
        self._underruns = 0
        self._sent = 0
        self._late = 0
        self._errors_ms: deque[float] = deque(maxlen=config.error_window)
        self._switch_latency_ms: deque[float] = deque(maxlen=64)
        self._stop_reason = "stopped"
        self._priority = "none"  # what `run` got for its thread (stats: realtime_priority)
        self._use_quiet = False  # pause the generator before due times (a real-time thread, internal tempo)
        self._bar_lead_s = 0.0  # how early a queued bar starts (`BAR_LEAD_S` on the real clock, internal tempo)
        self._collector: Optional[PacedCollector] = None  # the cyclic GC, run between events (real clock)
        self._stats_lock = threading.Lock()

    # ---- control from other threads ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="moodstream-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.queue.close()

    def join(self, timeout_s: Optional[float] = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return self.finished.is_set()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the scheduler thread (or here, if the scheduler is not running)."""
        running = self._thread is not None and self._thread.is_alive() and not self.finished.is_set()
        if running and threading.current_thread() is not self._thread:
            self._commands.append(fn)
            self._wake.set()
        else:
            fn()

    def panic(self) -> None:
        """Every sounding note off, then CC123/CC120 everywhere; the stream goes on."""
        self._call(self._silence)

    def set_bpm(self, bpm: Optional[float]) -> None:
        """Play at `bpm` from the next bar line (None: the model's tempo)."""
        def pin():
            self._bpm = bpm

        self._call(pin)

    def set_midi_clock(self, on: bool) -> None:
        """Start (song position + continue) or stop sending MIDI clock to the outputs that take it."""
        def toggle():
            if on == self._midi_clock:
                return
            if not on:
                self._transport("stop")
            self._midi_clock = on
            if on and self.started.is_set():
                beat = self._position_beats()
                sixteenths = int(beat * 4)
                outputs = self._clock_outputs()
                self._send_to(mido.Message("songpos", pos=min(sixteenths, 16383)), beat, outputs)
                self._send_to(mido.Message("continue"), beat, outputs)
                self._tick_index = max(self._tick_index, math.ceil(beat * CLOCKS_PER_BEAT))

        self._call(toggle)

    def add_output(self, output: Output) -> None:
        self._call(lambda: self._join_output(output))

    def remove_output(self, name: str) -> Optional[Output]:
        """Silence and detach the output called `name` (the caller closes it); None if there is none. The
        scheduler thread looks for it and detaches it (its lists are that thread's)."""
        found: list[Output] = []
        done = threading.Event()

        def detach():
            found.extend(o for o in self._outputs + self._broken if o.name == name)
            for output in found:
                if output in self._outputs:
                    self._silence_output(output)
                    self._outputs.remove(output)
                if output in self._broken:
                    self._broken.remove(output)
                with self._stats_lock:
                    self._failed.pop(output.name, None)
            done.set()

        self._call(detach)
        done.wait(2.0)
        return found[0] if found else None

    @property
    def outputs(self) -> list[Output]:
        return list(self._outputs)

    @property
    def broken_outputs(self) -> list[Output]:
        """Outputs that failed and were taken out (the engine closes them at the end)."""
        return list(self._broken)

    def position_beats(self) -> float:
        """The playback position now, in beats (for a playhead); safe from any thread."""
        return self._position_beats()

    def bar_line(self) -> Optional[tuple[int, int]]:
        """(bar number, seq of the newest bar started) as of the last bar line, read together (an underrun's
        silent bar counts a number, not a seq); None before the first bar line. Generation bar `seq` is due
        at bar number `number + seq - started`."""
        line = self._bar_line_now
        return None if line is None else (line.number, line.started)

    def playing_bar(self) -> Optional[tuple[int, int, float, float, float]]:
        """(bar number, seq, beats since its line now, its length in beats, seconds a beat plays now) of the
        bar playing; None before playback, in an underrun's silent bar, or while paused."""
        line = self._bar_line_now
        if line is None or line.length is None or not self.started.is_set() or self.timebase.paused:
            return None
        now_beats = self.timebase.beat_at(self.clock.now()) - line.beat
        return line.number, line.started, now_beats, line.length, 60.0 / self.timebase.qpm

    def seconds_to_next_bar(self) -> Optional[float]:
        """Clock seconds until the next bar line, or None before playback starts."""
        if not self.started.is_set() or self.timebase.paused:
            return None
        return self.timebase.due_s(self._next_bar_beat) - self.clock.now()

    def bar_seconds(self) -> float:
        """Clock seconds of the bar playing, at the tempo now."""
        return self._bar_length * 60.0 / self.timebase.qpm

    def stats(self) -> SchedulerStats:
        with self._stats_lock:  # copied under the lock, sorted after: the scheduler takes it for every message
            errors = list(self._errors_ms)
            outputs = {o.name: ("ok" if not o.closed else "closed") for o in self._outputs}
            outputs.update({name: f"failed: {msg}" for name, msg in self._failed.items()})
            stats = dict(
                bars_played=self._bars_played, bar_number=max(self._bar_number, 0),
                position_beats=self._last_beat, tempo_qpm=self.timebase.qpm, underruns=self._underruns,
                live_bars=self._live_bars,
                messages_sent=self._sent, late_messages=self._late,
                switch_latency_ms=tuple(self._switch_latency_ms), outputs=outputs,
                realtime_priority=self._priority)
        errors.sort()
        return SchedulerStats(send_error_p50_ms=_percentile(errors, 50), send_error_p99_ms=_percentile(errors, 99),
                              send_error_max_ms=errors[-1] if errors else 0.0, **stats)

    # ---- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        """The thread body. On the real clock the thread asks for real-time priority first
        (`streamer.rt`, `SchedulerConfig.rt_priority`) and gives it back before `finished` is set; its waits
        sleep until at most `MonotonicClock.spin_s` before each due time, so it never holds a core."""
        saved = None
        if isinstance(self.clock, MonotonicClock):
            self._collector = PacedCollector()
            saved = raise_thread_priority(self.config.rt_priority)
            with self._stats_lock:
                self._priority = saved.mode
            self._use_quiet = saved.mode == "fifo" and not self.timebase.external
            self._bar_lead_s = 0.0 if self.timebase.external else BAR_LEAD_S
        try:
            self._run()
        except Exception as err:  # never die silently: report, then silence in `finally`
            log.exception("scheduler failed")
            self._stop_reason = f"error: {type(err).__name__}: {err}"
        finally:
            self._end_quiet()
            self._drain_commands()
            self._silence()
            self._transport("stop")
            if saved is not None:
                restore_thread_priority(saved)
            if self._collector is not None:
                self._collector.close()
            # the news first: whoever waits on `finished` then finds PlaybackStopped already sent
            self._notify(PlaybackStopped(self._bars_played, self._stop_reason))
            self.finished.set()

    def _run(self) -> None:
        first = self.queue.take(wait=True, stop=self._stop)  # pre-roll: never start on an underrun
        if first is None or not self.timebase.wait_running(self._wake, self._stop):
            return
        self._drain_commands()
        self.timebase.start(self.clock.now() + self.config.start_delay_s)
        self._transport("start")
        self._bar_line(first)
        self.started.set()
        while not self._stop.is_set():
            self._drain_commands()
            if self.timebase.paused:
                self._pause()
                continue
            if self.queue.fragment is not None:
                self._take_fragment()
            frontier = self._absorb_live()
            bar_beat = self._next_bar_beat
            event_beat = self._heap[0][0] if self._heap else math.inf
            tick_beat = self._tick_index / CLOCKS_PER_BEAT if self._clock_outputs() else math.inf
            target = min(bar_beat, event_beat, tick_beat)
            if target >= frontier and self._beyond_frontier(target, bar_beat, event_beat, tick_beat, frontier):
                # the generator has not written that far yet: wait for its next notes (or for the due time of
                # notes already written at the frontier)
                self._end_quiet()
                self._wake.wait(min(0.05, max(0.0, self.timebase.due_s(target) - self.clock.now())) or 0.05)
                self._wake.clear()
                continue
            if bar_beat <= target and self._bar_lead_s and not self._max_bars_played() and len(self.queue):
                # a finished bar waiting in the queue starts `_bar_lead_s` early: its messages are then in the
                # heap when the line comes, and the line's first notes go at once
                if not self._wait_until(bar_beat, self._bar_lead_s):
                    self._wake.clear()
                    continue
                bar = self.queue.take_queued()
                if bar is not None:
                    self._bar_line(bar)
                    continue
            if not self._wait_until(target):
                self._wake.clear()
                continue
            if bar_beat <= target:
                if self._max_bars_played():
                    self._last_beat = bar_beat
                    self._stop_reason = "bars"
                    return
                self._bar_line(None)
            elif tick_beat <= event_beat:
                self._tick_index += 1
                self._last_beat = tick_beat  # transport messages sent later must not go back in time
                self._send_to(_CLOCK, tick_beat, self._clock_outputs())
            else:
                self._dispatch(*heapq.heappop(self._heap))
                self._dispatch_chord(event_beat)

    def _max_bars_played(self) -> bool:
        return self.config.max_bars is not None and self._bars_played >= self.config.max_bars

    def _wait_until(self, beat: float, early_s: float = 0.0) -> bool:
        """Wait until `beat` is due (on the internal timebase, until `early_s` before it), paced collection
        first (`PacedCollector`); on a real-time thread the generator is paused for the last `QUIET_LEAD_S`
        (`QuietWindow`: the window stays closed while the next due times follow that closely). Another
        device's MIDI clock (an external timebase) is waited for its own way, without either."""
        if self.timebase.external:
            return self.timebase.wait_until(beat, self._wake)
        due_s = self.timebase.due_s(beat) - early_s
        if self._collector is not None:
            self._collector.idle(due_s - self.clock.now())
        if self._use_quiet:
            until_quiet_s = due_s - QUIET_LEAD_S - self.clock.now()
            if until_quiet_s > 0:
                self._end_quiet()
                if self._wake.wait(until_quiet_s):  # news for the loop first (a plain wait: the real clock's)
                    return False
            self.queue.quiet.close()
        return self.clock.sleep_until(due_s, self._wake)

    def _notify(self, news: object) -> None:
        """Tell the UI (`notify`): at once, or once the quiet window opens (the news thread would take the GIL)."""
        if self._use_quiet and self.queue.quiet.closed:
            self._held_news.append(news)
        else:
            self._deliver(news)

    def _end_quiet(self) -> None:
        """Open the quiet window: the generator goes on, and the news held meanwhile goes out."""
        self.queue.end_quiet()
        held, self._held_news = self._held_news, []
        for news in held:
            self._deliver(news)

    def _dispatch_chord(self, beat: float) -> None:
        """Send the other events due at `beat` (a chord, a bar line's note-offs and note-ons) at once, without
        a trip round the loop each: a burst of 40 messages otherwise spends ~10 µs a message there, and the
        last of them is that much later. The loop's rules allow them all (they are due; the live bar's
        frontier is at `beat` or later); the bar line and clock ticks at `beat` have gone (they sort first)."""
        heap = self._heap
        while heap and heap[0][0] == beat:
            self._dispatch(*heapq.heappop(heap))

    def _drain_commands(self) -> None:
        while self._commands:
            self._commands.popleft()()

    def _beyond_frontier(self, target: float, bar_beat: float, event_beat: float, tick_beat: float,
                         frontier: float) -> bool:
        """Whether what is due at `target` must wait for the live bar: a note of it may still come before.
        At the frontier itself note-offs and clock ticks may go (they sort before any note still to come), and
        the notes already written once their time has come: the generator is still writing that beat, and
        the notes it has not written yet can only be later than these (they go as they come)."""
        if bar_beat <= target:
            return True  # the live bar is not finished
        if tick_beat <= event_beat:
            return tick_beat > frontier
        if event_beat > frontier:
            return True
        return self._heap[0][1] != ORDER_NOTE_OFF and self.timebase.due_s(event_beat) > self.clock.now()

    def _absorb_live(self) -> float:
        """Push what the live bar made since the last look; returns its frontier in absolute beats (inf: no
        live bar, or it is finished)."""
        live = self._live
        if live is None:
            return math.inf
        new, frontier_beats, notes = live.since(self._live_count)
        self._live_count += len(new)
        cut = live.cut_beats is not None
        if cut:
            new = [m for m in new if m.offset_beats >= self._live_from]
        if new:
            self._push(self._bar_start_beat, new, drop_tempo=self._live_bpm is not None)
        if frontier_beats < math.inf:
            return self._bar_start_beat + max(frontier_beats, self._live_from)
        self._live = None
        if live.bar is not None:
            if cut:  # the bar's notes before the cut, then the rest's
                notes = (*(n for n in self._bar_notes if n.start_beats < self._live_from),
                         *(n for n in notes if n.start_beats >= self._live_from))
            self._bar_notes = notes
            self._notify(BarNotes(self._bar_number, live.seq, notes))
        return math.inf

    def _take_fragment(self) -> None:
        """The generator offers the rest of a cut bar (a beat switch): if it is for the bar playing and the cut
        is still ahead (else from the next whole beat, if one is left), cut the bar there — the old messages
        from the cut on go and every old note ends there (`switching.cut_events`) — and play the rest as it is
        written, from the cut on. Else the generator drops it (`BarQueue.reject_fragment`)."""
        live = self.queue.take_fragment()
        if live is None:
            return
        self._absorb_live()  # a live bar finished meanwhile is done with
        line = self._bar_line_now
        start = self._bar_start_beat
        now_beats = self.timebase.beat_at(self.clock.now()) - start if self.started.is_set() else 0.0
        cut_beats = max(float(live.cut_beats), float(math.ceil(max(now_beats, self._last_beat - start) - 1e-9)))
        if (line is None or line.length is None or line.started != live.seq or self._live is not None
                or start + cut_beats >= self._next_bar_beat):
            self.queue.reject_fragment(live)
            log.info("beat switch: bar seq %d is no longer playing with a beat left; it lands at the bar line",
                     live.seq)
            return
        cut_beat = start + cut_beats
        self._heap = switching.cut_events(self._heap, cut_beat)
        heapq.heapify(self._heap)
        applied = SwitchApplied(live.switch_id, live.conditions, self._bar_number, int(cut_beats))
        self._n += 1
        heapq.heappush(self._heap, (cut_beat, ORDER_SETUP, self._n, _SwitchMark(applied), self._bar_number))
        self._live, self._live_count, self._live_bpm, self._live_from = live, 0, self._bpm, cut_beats
        live.attach(self._wake)
        self._switch_id = live.switch_id
        if live.requested_s is not None:
            self._pending_first_note = (live.switch_id, live.requested_s, self._bar_number, cut_beat)

    def _push(self, bar_beat: float, messages: Sequence[TimedMessage], drop_tempo: bool = False) -> None:
        """Schedule `messages` (offsets from `bar_beat`; set_tempo left out if `drop_tempo`) in the order
        given among equal times. A whole bar goes in at once, built in one comprehension and heapified in C:
        a Python call per message would cost a dense bar line milliseconds on a slow core."""
        n, number = self._n, self._bar_number
        entries = [(bar_beat + m.offset_beats, m.order, n + i, m.message, number) for i, m in enumerate(messages, 1)
                   if not (drop_tempo and m.message.type == "set_tempo")]
        self._n = n + len(messages)
        heap = self._heap
        if len(entries) < 8:
            for entry in entries:
                heapq.heappush(heap, entry)
        else:
            heap.extend(entries)
            heapq.heapify(heap)

    def _bar_line(self, bar: Optional[Bar | LiveBar]) -> None:
        """At the bar line `_next_bar_beat`: start the next bar, or bridge an underrun with silence."""
        beat = self._next_bar_beat
        self._last_beat = beat
        if bar is None:
            bar = self.queue.take(wait=self.config.wait_for_bars, stop=self._stop)
            self._drain_commands()  # asked for while `take` waited (a tempo for this line, say)
        self._bar_number += 1
        if bar is None:
            if self._stop.is_set():
                return
            started = -1 if self._bar_line_now is None else self._bar_line_now.started
            self._bar_line_now = BarLine(self._bar_number, started, beat, None)
            with self._stats_lock:
                self._underruns += 1
            log.warning("underrun at bar %d: no bar ready, %.2f silent beats", self._bar_number, self._bar_length)
            self._notify(Underrun(self._bar_number))
            self._bar_start_beat = beat
            self._next_bar_beat = beat + self._bar_length
            self._revive_outputs()
            return
        self._bar_line_now = BarLine(self._bar_number, bar.seq, beat, bar.length_beats)
        self._revive_outputs()
        self._bar_start_beat = beat
        if isinstance(bar, LiveBar):
            self._live, self._live_count, self._live_bpm, self._live_from = bar, 0, self._bpm, 0.0
            bar.attach(self._wake)
            if self._bpm is not None:
                self._push(beat, (tempo_override(self._bpm),))
            self._absorb_live()
            bar_tempo, notes = bar.tempo_qpm, bar.notes
        else:
            if self._bpm is not None:
                self._push(beat, (tempo_override(self._bpm),))
            self._push(beat, bar.messages.messages, drop_tempo=self._bpm is not None)
            bar_tempo, notes = bar.messages.tempo_qpm, bar.messages.notes
        self._bar_notes = notes
        self._bar_length = bar.length_beats
        self._next_bar_beat = beat + bar.length_beats
        with self._stats_lock:
            self._bars_played += 1
            self._live_bars += isinstance(bar, LiveBar)
        if bar.switch_id != self._switch_id:
            self._switch_id = bar.switch_id
            self._notify(SwitchApplied(bar.switch_id, bar.conditions, self._bar_number))
            if bar.requested_s is not None:
                self._pending_first_note = (bar.switch_id, bar.requested_s, self._bar_number, beat)
        tempo = self._bpm if self._bpm is not None else bar_tempo
        self._notify(BarStarted(self._bar_number, bar.seq, beat, bar.length_beats, tempo, bar.conditions,
                                bar.switch_id, notes))

    def _dispatch(self, beat: float, order: int, n: int, msg: mido.Message, bar_number: int) -> None:
        self._last_beat = beat
        kind = msg.type
        if kind == "switch_mark":
            self._notify(msg.news)
            return
        if kind == "set_tempo":
            qpm = tempo_qpm(msg)
            if abs(qpm - self.timebase.qpm) > 1e-9:
                self.timebase.set_tempo(beat, qpm)
            self._send_to(msg, beat, [o for o in self._outputs if o.wants_meta])
            return
        due_s = self.timebase.due_s(beat)
        if kind == "note_on":
            if self.sounding.on(msg.channel, msg.note):
                self._send(mido.Message("note_off", skip_checks=True, channel=msg.channel, note=msg.note), beat)
            pending = self._pending_first_note
            if pending is not None and bar_number >= pending[2] and beat >= pending[3]:
                now_s = self.clock.now()
                latency_ms = (now_s - pending[1]) * 1e3
                self._pending_first_note = None
                with self._stats_lock:
                    self._switch_latency_ms.append(latency_ms)
                self._notify(SwitchSounded(pending[0], latency_ms, bar_number, max(0.0, (now_s - due_s) * 1e3)))
        elif kind == "note_off":
            if not self.sounding.off(msg.channel, msg.note):
                return
        elif kind == "program_change":
            self._programs[msg.channel] = msg.program
        self._send(msg, beat)
        error_ms = max(0.0, (self.clock.now() - due_s) * 1e3)
        with self._stats_lock:
            self._errors_ms.append(error_ms)
            if error_ms > self.config.late_ms:
                self._late += 1

    def _send(self, msg: mido.Message, beat: float) -> None:
        self._send_to(msg, beat, self._outputs)

    def _send_to(self, msg, beat: float, outputs: Sequence[Output]) -> None:
        out = stamped(msg, beat)
        for output in list(outputs):
            try:
                output.send(out)
            except Exception as err:
                self._fail(output, err)
        with self._stats_lock:
            self._sent += 1

    def _fail(self, output: Output, err: Exception) -> None:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.error("output %s failed: %s", output.name, text)
        if output in self._outputs:
            self._outputs.remove(output)
        if output not in self._broken:
            self._broken.append(output)
        with self._stats_lock:
            self._failed[output.name] = text
        self._notify(OutputFailed(output.name, text))

    def _revive_outputs(self) -> None:
        """At a bar line: take back failed outputs that work again (their own threads reconnect them)."""
        for output in list(self._broken):
            if not output.can_reconnect or output.closed:
                continue
            try:
                back = output.reconnected()
            except Exception as err:
                log.debug("output %s: reconnect check failed: %s", output.name, err)
                continue
            if not back:
                continue
            self._broken.remove(output)
            with self._stats_lock:
                self._failed.pop(output.name, None)
            if any(o.name == output.name for o in self._outputs):  # replaced meanwhile: keep the new one
                self._broken.append(output)
                continue
            log.info("output %s works again from bar %d", output.name, self._bar_number)
            self._join_output(output)
            self._notify(OutputRecovered(output.name, self._bar_number))

    def _clock_outputs(self) -> list[Output]:
        if not self._midi_clock or self.timebase.external:
            return []
        return [o for o in self._outputs if o.wants_clock]

    def _transport(self, kind: str) -> None:
        """MIDI start (with song position 0) or stop, to the outputs that take MIDI clock."""
        outputs = self._clock_outputs()
        if not outputs:
            return
        if kind == "start":
            self._send_to(mido.Message("songpos", pos=0), 0.0, outputs)
        self._send_to(mido.Message(kind), self._position_beats(), outputs)

    def _position_beats(self) -> float:
        if not self.started.is_set():
            return self._last_beat
        return max(self._last_beat, min(self.timebase.beat_at(self.clock.now()), self._next_bar_beat))

    def _silence_output(self, output: Output) -> None:
        beat = self._position_beats()
        try:
            for channel, note in sorted(self.sounding.counts):
                output.send(mido.Message("note_off", channel=channel, note=note).copy(time=beat))
            output.panic()
        except Exception as err:
            self._fail(output, err)

    def _silence(self) -> None:
        """All sounding notes off (each gets its note_off), then CC123/CC120 on every output."""
        beat = self._position_beats()
        for channel, note in self.sounding.clear():
            self._send(mido.Message("note_off", channel=channel, note=note), beat)
        for output in list(self._outputs):
            try:
                output.panic()
            except Exception as err:
                self._fail(output, err)

    def _join_output(self, output: Output) -> None:
        """A new output mid-stream: recording origin, transport position, tempo and programs."""
        self._outputs.append(output)
        output.joined(self._bar_start_beat if self.started.is_set() else 0.0)
        beat = self._position_beats()
        try:
            if self.started.is_set() and output.wants_clock and self._clock_outputs():
                sixteenths = int(beat * 4)
                output.send(mido.Message("songpos", pos=min(sixteenths, 16383)).copy(time=beat))
                output.send(mido.Message("continue").copy(time=beat))
                self._tick_index = max(self._tick_index, math.ceil(beat * CLOCKS_PER_BEAT))
            if output.wants_meta:
                output.send(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.timebase.qpm), time=beat))
            for channel, program in sorted(self._programs.items()):
                output.send(mido.Message("program_change", channel=channel, program=program, time=beat))
        except Exception as err:
            self._fail(output, err)

    def _pause(self) -> None:
        """External Stop: silence, wait for Start/Continue; Start resumes at the next bar line."""
        self._silence()
        if not self.timebase.wait_running(self._wake, self._stop):
            return
        if self.timebase.take_restart():
            restart_beat = self._next_bar_beat
            self._heap = [e for e in self._heap if e[0] >= restart_beat]  # stray note_offs are skipped
            heapq.heapify(self._heap)
            self._live = None  # so is the rest of a bar still being written
            self.timebase.rebase(restart_beat)
