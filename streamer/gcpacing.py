"""The cyclic garbage collector, paced by the scheduler thread on the real clock.

CPython collects when allocations pass a threshold, in whichever thread allocates at that moment, and holds
the GIL throughout: a young-generation pass that falls in the scheduler thread mid-chord (or in the generator
just before a due time) makes those notes late by its length, 0.6-1.6 ms on a slow 2-core VM. While a
`PacedCollector` is active, automatic collection is off; the scheduler calls `idle(slack_s)` before each
wait, and the collector runs the generation CPython would have run by then (its thresholds, its order)
when the wait is long enough for it: `slack_s` ≥ `MIN_SLACK_S` and ≥ `SLACK_FACTOR` × that generation's
longest pass so far. Memory stays bounded without slack too: a collection overdue by `OVERDUE` × the
threshold runs at the next call whatever the slack.

    collector = PacedCollector()     # automatic collection off (process-wide; nests)
    collector.idle(0.040)            # before a 40 ms wait: collect if due and it fits
    collector.close()                # automatic collection back on when the last one closes
"""

from __future__ import annotations

import gc
import threading
import time

MIN_SLACK_S = 0.005  # never collect with less time than this before the next due time
SLACK_FACTOR = 4.0  # nor with less than this × the generation's longest pass
OVERDUE = 8  # young allocations past this × the threshold: collect now, whatever the slack

_lock = threading.Lock()
_active = 0  # PacedCollectors open; automatic collection is off while > 0
_was_enabled = True  # whether it was on when the first one opened


class PacedCollector:
    def __init__(self):
        global _active, _was_enabled
        with _lock:
            if _active == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _active += 1
        self._closed = False
        self.threshold = gc.get_threshold()
        self.longest_s = [0.0, 0.0, 0.0]  # per generation
        self.collections = [0, 0, 0]

    def due(self) -> int:
        """The generation CPython would collect now (-1: none): the oldest whose count passed its threshold,
        as long as the next younger one's did."""
        counts, threshold = gc.get_count(), self.threshold
        if threshold[0] == 0 or counts[0] <= threshold[0]:
            return -1
        generation = 0
        while generation < 2 and counts[generation + 1] >= threshold[generation + 1]:
            generation += 1
        return generation

    def idle(self, slack_s: float) -> bool:
        """The caller has `slack_s` seconds before its next due time: collect if due and it fits; True if
        it did."""
        generation = self.due()
        if generation < 0:
            return False
        fits = slack_s >= max(MIN_SLACK_S, SLACK_FACTOR * self.longest_s[generation])
        if not fits and gc.get_count()[0] < OVERDUE * self.threshold[0]:
            return False
        started_s = time.perf_counter()
        gc.collect(generation)
        self.longest_s[generation] = max(self.longest_s[generation], time.perf_counter() - started_s)
        self.collections[generation] += 1
        return True

    def close(self) -> None:
        """Automatic collection back as it was, once every open collector has closed. Idempotent."""
        global _active
        with _lock:
            if self._closed:
                return
            self._closed = True
            _active -= 1
            if _active == 0 and _was_enabled:
                gc.enable()
