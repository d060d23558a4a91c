"""A clock for tests that moves only when the test advances it (threads sleeping on it wake then)."""

from __future__ import annotations

import threading


class ManualClock:
    """Time moves only when the test advances it; sleepers wake once it passes their due time."""

    def __init__(self):
        self._now_s = 0.0
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now_s

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now_s += seconds
            self._cond.notify_all()

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool:
        with self._cond:
            while self._now_s < due_s:
                if wake.is_set():
                    return False
                self._cond.wait(0.005)  # `wake` is set without our condition: look again soon
            return True
