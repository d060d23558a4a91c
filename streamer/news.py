"""One fan-out for the engine's news: every listener (the TUI, OSC subscribers, the event log, cue player,
status line) subscribes to the same `NewsHub`, optionally to some news types only.

    hub.subscribe(listener)                              # every news object, in order, on the news thread
    hub.subscribe(listener, BarStarted, SwitchApplied)   # only these types
    hub.subscribe(listener, timed=True)                  # listener(news, posted_s): the clock time it was posted
    hub.subscribe(listener, BarStarted, sync=True)       # on the posting thread (quick, never blocks: renders)
    hub.post(news)                                       # any thread; never blocks

Listeners run one after another on the hub's own thread, so a slow one delays the others' news but never
playback; one that raises is logged and kept. The news types live here too: the scheduler's playback news
(`BarStarted`, `SwitchApplied`, `Underrun`, `PlaybackStopped`, ...) and the news that says what changed
from outside (`ControlsChanged`, `ActionTaken`: what, and from where) and the generator's (`BarQueued`,
`BarsDiscarded`, `GeneratorFailed`).
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from model.vocab import Conditions
from streamer.bars import Bar, Note
from streamer.controls import Controls

log = logging.getLogger(__name__)


_LABELS = {"bpm": "tempo", "guidance_w": "guidance", "top_p": "top-p"}


# ---- playback news (scheduler and engine) ------------------------------------------------------------------
@dataclass(frozen=True)
class BarStarted:
    bar_number: int  # playback bar counter (silent bars included)
    seq: int
    start_beat: float
    length_beats: float
    tempo_qpm: float
    conditions: Conditions
    switch_id: int
    notes: tuple[Note, ...]  # as played, offsets from the bar line (piano roll)


@dataclass(frozen=True)
class BarNotes:
    """A bar that started before it was finished (a `LiveBar`) is finished: all its notes, as played."""

    bar_number: int
    seq: int
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class SwitchApplied:
    switch_id: int
    conditions: Conditions
    bar_number: int
    at_beat: Optional[int] = None  # a beat switch: beats after that bar's line (None: at the line)


@dataclass(frozen=True)
class SwitchPending:
    """A genre/mood switch was asked for: `controls` are expected to sound from playback bar `at_bar` (from
    `at_beat` beats after its line for a beat switch; None: from the line)."""

    controls: Controls
    at_bar: int
    switch_id: int
    at_beat: Optional[int] = None


@dataclass(frozen=True)
class SwitchSounded:
    """The first note under a switch was sent: `latency_ms` after the control change, `late_ms` after its
    own due time."""

    switch_id: int
    latency_ms: float
    bar_number: int
    late_ms: float = 0.0


@dataclass(frozen=True)
class Underrun:
    bar_number: int  # this bar line had no bar ready: a silent bar plays instead


@dataclass(frozen=True)
class OutputFailed:
    name: str
    message: str


@dataclass(frozen=True)
class OutputRecovered:
    """An output that failed works again (e.g. the JACK server is back) and plays from this bar line."""

    name: str
    bar_number: int


@dataclass(frozen=True)
class PlaybackStopped:
    bars_played: int
    reason: str  # "stopped", "bars", "error: ..."


# ---- what changed from outside --------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlsChanged:
    """`Engine.set_controls` accepted new controls from `source` ("ui", "osc 127.0.0.1:53211", "midi",
    "cues", "api"); a genre/mood change sounds from `at_bar` (None: no genre/mood change)."""

    previous: object  # Controls
    controls: object  # Controls
    source: str
    at_bar: Optional[int]

    def changes(self) -> dict:
        """{field: new value} of the fields that differ."""
        return {name: getattr(self.controls, name) for name in vars(self.controls)
                if getattr(self.controls, name) != getattr(self.previous, name)}

    def describe(self) -> str:
        """One line: "rock · tense at bar 42, temperature 0.80, tempo 100 bpm"."""
        changes = self.changes()
        parts = []
        if "genre" in changes or "mood" in changes:
            where = f" at bar {self.at_bar}" if self.at_bar is not None else ""
            parts.append(f"{self.controls.genre} · {self.controls.mood}{where}")
        for name, value in changes.items():
            if name in ("genre", "mood"):
                continue
            label = _LABELS.get(name, name)
            if value is None:
                parts.append(f"{label} model")
            elif name == "bpm":
                parts.append(f"{label} {value:.0f} bpm")
            else:
                parts.append(f"{label} {value:.2f}" if isinstance(value, float) else f"{label} {value}")
        return ", ".join(parts) or "no change"


@dataclass(frozen=True)
class ActionTaken:
    """An action from outside the UI: `action` is panic, record (detail: the file, or "" when stopped),
    stop, switch_at (detail: the mode), subscribe / unsubscribe (detail: the subscriber)."""

    action: str
    source: str
    detail: str = ""


@dataclass(frozen=True)
class ControlError:
    """A message from outside that was refused (unknown address, wrong type or value); the stream goes on."""

    message: str
    source: str


class _Listener:
    __slots__ = ("fn", "types", "timed")

    def __init__(self, fn: Callable, types: tuple[type, ...], timed: bool):
        self.fn, self.types, self.timed = fn, types, timed

    def wants(self, news: object) -> bool:
        return not self.types or isinstance(news, self.types)

    def call(self, news: object, posted_s: float) -> None:
        try:
            if self.timed:
                self.fn(news, posted_s)
            else:
                self.fn(news)
        except Exception:  # a broken listener must not end the news for the others
            log.exception("news listener %r failed on %s", getattr(self.fn, "__name__", self.fn),
                          type(news).__name__)


class NewsHub:
    """See the module docstring. `clock` stamps each news object when it is posted (`now()`)."""

    def __init__(self, clock=None):
        self.clock = clock
        self._queue: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._listeners: tuple[_Listener, ...] = ()
        self._sync: tuple[_Listener, ...] = ()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def subscribe(self, listener: Callable, *types: type, timed: bool = False, sync: bool = False) -> Callable:
        """Add `listener` (for `types` only, if any); returns it (for `unsubscribe`)."""
        entry = _Listener(listener, tuple(types), timed)
        with self._lock:
            if sync:
                self._sync = (*self._sync, entry)
            else:
                self._listeners = (*self._listeners, entry)
        return listener

    def unsubscribe(self, listener: Callable) -> None:
        with self._lock:
            self._listeners = tuple(e for e in self._listeners if e.fn is not listener)
            self._sync = tuple(e for e in self._sync if e.fn is not listener)

    def post(self, news: object) -> None:
        """Any thread; never blocks (sync listeners run here first)."""
        posted_s = self.clock.now() if self.clock is not None else 0.0
        for entry in self._sync:
            if entry.wants(news):
                entry.call(news, posted_s)
        self._queue.put((news, posted_s))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver, name="moodstream-news", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what was posted, then end the thread."""
        self._queue.put(None)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout_s)

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            news, posted_s = item
            for entry in self._listeners:
                if entry.wants(news):
                    entry.call(news, posted_s)


# ---- the generator's news --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BarQueued:
    bar: Bar
    queued: int  # bars waiting after this one was queued (the lookahead in bars)
    playing: bool = False  # the bar was already playing as it was written (a LiveBar); not queued


@dataclass(frozen=True)
class BarsDiscarded:
    from_seq: int
    count: int  # queued bars thrown away by a switch


@dataclass(frozen=True)
class GeneratorFailed:
    message: str
    fatal: bool  # True: the generator gave up (after max_failures errors in a row)
