"""Outputs that go nowhere: `NullOutput` (discards, counts) and `MemoryOutput` (keeps every message with
the clock time it was sent at — the recording edge the tests and the bench assert on)."""

from __future__ import annotations

import threading

import mido

from streamer.outputs.base import Output


class NullOutput(Output):
    name = "null"

    def _send(self, msg: mido.Message) -> None:
        pass


class MemoryOutput(Output):
    """Keeps `(sent_s, message)` pairs; `message.time` is the beat position. Thread-safe reads."""

    name = "memory"

    def __init__(self, clock=None, name: str = "memory", wants_clock: bool = False, wants_meta: bool = False):
        super().__init__()
        self.clock = clock
        self.name = name
        self.wants_clock = wants_clock
        self.wants_meta = wants_meta
        self._lock = threading.Lock()
        self._log: list[tuple[float, mido.Message]] = []

    def _send(self, msg: mido.Message) -> None:
        sent_s = self.clock.now() if self.clock is not None else 0.0
        with self._lock:
            self._log.append((sent_s, msg))

    @property
    def log(self) -> list[tuple[float, mido.Message]]:
        with self._lock:
            return list(self._log)

    @property
    def messages(self) -> list[mido.Message]:
        return [msg for _, msg in self.log]
