"""Clocks for the scheduler: `MonotonicClock` (real time: sleep, then a short spin) and `FakeClock`
(time moves only when someone waits, so hours of music run in seconds, identically every time).

Contract: `now()` → seconds (float, monotonic); `sleep_until(due_s, wake)` returns True once `now() ≥
due_s`, or False as soon as the `threading.Event` `wake` is set (the caller then re-checks its work).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

DEFAULT_SPIN_S = 0.001  # the last millisecond before a due time is spun, not slept (Event.wait overshoots)


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool: ...


class MonotonicClock:
    """Real time from `time.perf_counter` (monotonic, high resolution)."""

    def __init__(self, spin_s: float = DEFAULT_SPIN_S):
        if not 0 <= spin_s <= 0.05:
            raise ValueError(f"spin_s = {spin_s!r} must be in [0, 0.05] seconds")
        self.spin_s = spin_s

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool:
        while True:
            if wake.is_set():
                return False
            remaining_s = due_s - time.perf_counter()
            if remaining_s <= 0:
                return True
            if remaining_s > self.spin_s:
                if wake.wait(remaining_s - self.spin_s):
                    return False
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
