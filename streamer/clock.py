"""Clocks for the scheduler: `MonotonicClock` (real time: sleep, then a short spin) and `FakeClock`
(time moves only when someone waits, so hours of music run in seconds, identically every time).

Contract: `now()` → seconds (float, monotonic); `sleep_until(due_s, wake)` returns True once `now() ≥
due_s`, or False as soon as the `threading.Event` `wake` is set (the caller then re-checks its work).
Timebases map the scheduler's quarter-note beats onto a clock: `InternalTimebase` (the bars' tempo map)
and `ExternalTimebase` (another device's MIDI clock, 24 pulses per beat).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import sys
import threading
import time
from typing import Callable, Optional, Protocol

from streamer.rt import thread_priority

CLOCKS_PER_BEAT = 24  # MIDI clock: 24 pulses per quarter note
DEFAULT_SPIN_S = 0.001  # the last millisecond before a due time is spun, not slept (Event.wait overshoots)


def _gil_holding_sleep() -> Optional[Callable[[float], None]]:
    """`sleep(until_s)`: sleep until `time.perf_counter()` reads `until_s`, keeping the GIL (libc's
    clock_nanosleep on CLOCK_MONOTONIC — perf_counter's clock — called through `ctypes.PyDLL`, which does
    not release it). None where that is not available (not Linux, another clock)."""
    if not sys.platform.startswith("linux"):
        return None
    if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
        return None
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    libc = ctypes.PyDLL(path)

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    clock_nanosleep = libc.clock_nanosleep
    clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(Timespec), ctypes.c_void_p]
    clock_nanosleep.restype = ctypes.c_int
    monotonic, abstime = time.CLOCK_MONOTONIC, 1  # TIMER_ABSTIME

    def sleep(until_s: float) -> None:
        seconds = int(until_s)
        due = Timespec(seconds, int((until_s - seconds) * 1e9))
        while clock_nanosleep(monotonic, abstime, ctypes.byref(due), None) == errno.EINTR:  # a signal: sleep on
            pass

    return sleep


_sleep_holding_gil = _gil_holding_sleep()


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool: ...


class MonotonicClock:
    """Real time from `time.perf_counter` (monotonic, high resolution).

    `sleep_until` sleeps (`Event.wait`) until `spin_s` before the due time. The rest it spins, yielding the
    GIL — or, on a thread at real-time priority (`streamer.rt`, "fifo"), which the kernel wakes within tens
    of microseconds, it sleeps it through holding the GIL: then no other thread's Python, which a busy
    machine may deschedule mid-bytecode, can stand between it and the due time. Either way the last stretch
    is at most `spin_s` per due time, so the thread never holds a core (nor the GIL) for longer.
    """

    def __init__(self, spin_s: float = DEFAULT_SPIN_S):
        if not 0 <= spin_s <= 0.05:
            raise ValueError(f"spin_s = {spin_s!r} must be in [0, 0.05] seconds")
        self.spin_s = spin_s

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool:
        hold_gil = _sleep_holding_gil is not None and thread_priority() == "fifo"
        while True:
            if wake.is_set():
                return False
            remaining_s = due_s - time.perf_counter()
            if remaining_s <= 0:
                return True
            if remaining_s > self.spin_s:
                if wake.wait(remaining_s - self.spin_s):
                    return False
            elif hold_gil:
                _sleep_holding_gil(due_s)
            else:
                time.sleep(0)  # yield the GIL while spinning


class FakeClock:
    """A clock that jumps to each due time at once. Thread-safe; `advance(s)` moves it by hand."""

    def __init__(self, start_s: float = 0.0):
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += seconds

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool:
        if wake.is_set():
            return False
        with self._lock:
            self._now_s = max(self._now_s, due_s)
        return True


class InternalTimebase:
    """Beats → clock seconds by the tempo map, anchored at the last tempo change."""

    external = False
    paused = False

    def __init__(self, clock: Clock, tempo_qpm: float = 120.0):
        self.clock = clock
        self.qpm = tempo_qpm
        self._anchor_s = 0.0
        self._anchor_beat = 0.0

    def wait_running(self, wake: threading.Event, stop: threading.Event) -> bool:
        return not stop.is_set()

    def start(self, at_s: float) -> None:
        self._anchor_s, self._anchor_beat = at_s, 0.0

    def set_tempo(self, beat: float, qpm: float) -> None:
        self._anchor_s, self._anchor_beat, self.qpm = self.due_s(beat), beat, qpm

    def due_s(self, beat: float) -> float:
        return self._anchor_s + (beat - self._anchor_beat) * 60.0 / self.qpm

    def beat_at(self, t_s: float) -> float:
        return self._anchor_beat + (t_s - self._anchor_s) * self.qpm / 60.0

    def wait_until(self, beat: float, wake: threading.Event) -> bool:
        return self.clock.sleep_until(self.due_s(beat), wake)

    def take_restart(self) -> bool:
        return False


class ExternalTimebase:
    """Beats from another device's MIDI clock (24 per beat): Start and Continue run, Stop pauses.

    The MIDI input thread calls `on_clock`, `on_start`, `on_continue`, `on_stop`. Due times between
    pulses are estimated from the smoothed pulse interval. After Stop, Continue resumes where the
    stream paused; Start resumes at the next bar line (`take_restart`). Tempo tokens are ignored.
    """

    external = True

    def __init__(self, clock: Clock, nominal_qpm: float = 120.0):
        self.clock = clock
        self._lock = threading.Lock()
        self.running = False
        self._started_once = False
        self._restart = False
        self._ticks = 0
        self._base_beat = 0.0
        self._last_tick_s = clock.now()
        self._tick_s = 60.0 / (nominal_qpm * CLOCKS_PER_BEAT)
        self._wake: Optional[threading.Event] = None
        self.ticks_received = 0

    @property
    def paused(self) -> bool:
        return not self.running

    @property
    def qpm(self) -> float:
        return 60.0 / (self._tick_s * CLOCKS_PER_BEAT)

    def attach(self, wake: threading.Event) -> None:
        self._wake = wake

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def on_clock(self, at_s: Optional[float] = None) -> None:
        """One pulse, received at clock time `at_s` (default: now)."""
        now = self.clock.now() if at_s is None else at_s
        with self._lock:
            self.ticks_received += 1
            if not self.running:
                return
            interval = now - self._last_tick_s
            if 0 < interval < 1.0:
                self._tick_s += 0.2 * (interval - self._tick_s)  # smoothed pulse interval
            self._ticks += 1
            self._last_tick_s = now

    def _resume(self, restart: bool) -> None:
        with self._lock:
            if self.running:
                return
            self._restart = restart and self._started_once
            self._started_once = True
            self.running = True
            self._ticks = 0
            self._last_tick_s = self.clock.now()
        self._poke()

    def on_start(self) -> None:
        self._resume(restart=True)

    def on_continue(self) -> None:
        self._resume(restart=False)

    def on_stop(self) -> None:
        with self._lock:
            if not self.running:
                return
            self._base_beat = self._base_beat + self._ticks / CLOCKS_PER_BEAT
            self._ticks = 0
            self.running = False
        self._poke()

    def take_restart(self) -> bool:
        with self._lock:
            restart, self._restart = self._restart, False
            return restart

    def rebase(self, beat: float) -> None:
        with self._lock:
            self._base_beat = beat - self._ticks / CLOCKS_PER_BEAT

    def wait_running(self, wake: threading.Event, stop: threading.Event) -> bool:
        while not self.running:
            if stop.is_set():
                return False
            wake.wait(0.05)
            wake.clear()
        return not stop.is_set()

    def start(self, at_s: float) -> None:
        pass

    def set_tempo(self, beat: float, qpm: float) -> None:
        pass

    def due_s(self, beat: float) -> float:
        with self._lock:
            ticks_ahead = (beat - self._base_beat) * CLOCKS_PER_BEAT - self._ticks
            return self._last_tick_s + ticks_ahead * self._tick_s

    def beat_at(self, t_s: float) -> float:
        with self._lock:
            extra = min(max(0.0, (t_s - self._last_tick_s) / self._tick_s), 1.0)
            return self._base_beat + (self._ticks + extra) / CLOCKS_PER_BEAT

    def wait_until(self, beat: float, wake: threading.Event) -> bool:
        """True once the pulses reach `beat` (or the estimate says it is due and a pulse is at most one
        interval away); False when woken or paused. Re-estimates after every pulse."""
        while True:
            if not self.running:
                return False
            with self._lock:
                ticks_needed = (beat - self._base_beat) * CLOCKS_PER_BEAT
                if self._ticks >= ticks_needed - 1e-9:
                    return True
                due = self._last_tick_s + (ticks_needed - self._ticks) * self._tick_s
                if ticks_needed - self._ticks < 1.0 and self.clock.now() >= due:
                    return True
                step = min(due, self.clock.now() + self._tick_s)
            if not self.clock.sleep_until(step, wake):
                return False
