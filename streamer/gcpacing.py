"""The cyclic garbage collector, paced by the scheduler thread on the real clock.

CPython collects when allocations pass a threshold, in whichever thread allocates at that moment, and holds
the GIL throughout: a young-generation pass that falls in the scheduler thread mid-chord (or in the generator
just before a due time) makes those notes late by its length, which can be a millisecond or more. While a
`PacedCollector` is active, automatic collection is off; the scheduler calls `idle(slack_s)` before each
wait, and the collector runs the generation CPython would have run by then (its thresholds, its order)
if it fits the wait: `slack_s` ≥ `MIN_SLACK_S` and ≥ `SLACK_FACTOR` × the longest pass of that generation
so far (at first a cautious guess, `FIRST_GUESS_S`). If it does not fit, a younger generation that fits
runs instead. A generation overdue by `OVERDUE` × its threshold runs at the next call whatever the slack,
so memory stays bounded in music too dense to leave room.

    collector = PacedCollector()     # automatic collection off (process-wide; nests)
    collector.idle(0.040)            # before a 40 ms wait: collect if due and it fits
    collector.close()                # automatic collection back on when the last one closes
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Optional

MIN_SLACK_S = 0.005  # never collect with less time than this before the next due time
SLACK_FACTOR = 4.0  # nor with less than this × the generation's longest pass
OVERDUE = 8  # a generation's count past this × its threshold: collect it now, whatever the slack
FIRST_GUESS_S = (0.001, 0.005, 0.05)  # per generation, until a pass is measured

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
        self.longest_s = list(FIRST_GUESS_S)  # per generation: the longest pass so far (or the guess)
        self._measured = [False, False, False]
        self.collections = [0, 0, 0]

    def due(self, counts: Optional[tuple[int, int, int]] = None) -> int:
        """The generation CPython would collect now (-1: none): the oldest whose count passed its threshold,
        as long as the next younger one's did. `counts`: `gc.get_count()`, if the caller has read it."""
        counts, threshold = counts or gc.get_count(), self.threshold
        if threshold[0] == 0 or counts[0] <= threshold[0]:
            return -1
        generation = 0
        while generation < 2 and counts[generation + 1] >= threshold[generation + 1]:
            generation += 1
        return generation

    def idle(self, slack_s: float) -> bool:
        """The caller has `slack_s` seconds before its next due time: collect if due and it fits; True if
        it did."""
        counts = gc.get_count()
        due = self.due(counts)
        if due < 0:
            return False
        for generation in range(due, -1, -1):
            if slack_s >= max(MIN_SLACK_S, SLACK_FACTOR * self.longest_s[generation]):
                break
        else:
            overdue = [g for g in range(due + 1) if counts[g] >= OVERDUE * self.threshold[g]]
            if not overdue:
                return False
            generation = overdue[-1]
        started_s = time.perf_counter()
        gc.collect(generation)
        took_s = time.perf_counter() - started_s
        self.longest_s[generation] = max(self.longest_s[generation], took_s) if self._measured[generation] else took_s
        self._measured[generation] = True
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
