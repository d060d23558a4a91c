"""A clock for tests that moves only when the test advances it (threads sleeping on it wake then), and
`wait_until`, the tests' poll for something another thread does."""

from __future__ import annotations

import threading
import time


def wait_until(predicate, timeout_s: float = 10.0, poll_s: float = 0.002) -> bool:
    """Poll `predicate` (real time) until it holds or `timeout_s` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(poll_s)
    return True


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
