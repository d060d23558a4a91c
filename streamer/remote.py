"""Control from outside the UI (OSC, a MIDI controller): one `Remote` turns commands into engine calls.

    remote = Remote(engine, record_path=lambda: Path("take.mid")); remote.start()
    remote.change("osc 127.0.0.1:53211", genre="jazz", mood="calm")   # None, or the problem as one line
    remote.act("midi", "panic")   # panic | record (value: bool or "toggle") | stop | switch_at ("bar" | "phrase:N")
    remote.close()

Commands may come from any thread and never raise. A change is checked at once against the controls asked for
so far (a bad name or value is one `ControlError` on the engine's news and one log line, at most
`LOG_PER_S` lines a second); good ones are merged and applied by the remote's own thread at most every
`min_interval_s`, so a flood of messages becomes a few switches and the last one wins. Panic and recording
are merged the same way; stop goes out at once as news (`ActionTaken("stop")`) for whoever runs the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from model.errors import MoodstreamError
from streamer.controls import parse_switch_at
from streamer.news import ActionTaken, ControlError

log = logging.getLogger(__name__)

LOG_PER_S = 5  # log lines a second for refused messages (the rest are counted)
ACTIONS = ("panic", "record", "stop", "switch_at")


class Remote:
    """See the module docstring. `record_path()` names the file `record 1` starts (None: recording from
    outside is refused)."""

    def __init__(self, engine, record_path: Optional[Callable[[], Path]] = None, min_interval_s: float = 0.05):
        self.engine = engine
        self.record_path = record_path
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._pending: dict = {}  # control changes merged since the last apply
        self._pending_source = ""
        self._asked = None  # the controls as asked for, pending changes included
        self._panic: Optional[str] = None  # source of a pending panic
        self._record: Optional[tuple[bool, str]] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moodstream-remote", daemon=True)
        self._log_window_s = 0.0
        self._log_count = 0
        self.refused = 0  # messages refused so far
        self.applied = 0  # engine calls made

    def start(self) -> "Remote":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    # ---- commands (any thread) ------------------------------------------------------------------------
    def change(self, source: str, **changes) -> Optional[str]:
        """Ask for control changes (genre=, mood=, temperature=, top_p=, guidance_w=, bpm=): None if accepted
        (applied within `min_interval_s`), else the problem, which is also reported."""
        with self._lock:
            base = self._asked if self._pending else self.engine.controls
            try:
                asked = base.but(**changes)
                asked.check(self.engine.vocab)
            except (MoodstreamError, TypeError, ValueError) as err:
                problem = str(err)
            else:
                self._pending.update(changes)
                self._pending_source = source
                self._asked = asked
                problem = None
        if problem is not None:
            return self.refuse(source, problem)
        self._wake.set()
        return None

    def act(self, source: str, action: str, value=None) -> Optional[str]:
        """An action (see `ACTIONS`): None if accepted, else the problem (also reported)."""
        if action == "stop":
            self.engine.post(ActionTaken("stop", source))
            return None
        if action == "switch_at":
            try:
                mode = parse_switch_at(value)
            except MoodstreamError as err:
                return self.refuse(source, str(err))
            self.engine.set_switch_at(mode)
            self.engine.post(ActionTaken("switch_at", source, mode.name))
            return None
        problem = None
        with self._lock:
            if action == "panic":
                self._panic = source
            elif action == "record" and self.record_path is not None:
                self._record = (None if value == "toggle" else bool(value), source)
            elif action == "record":
                problem = "recording from outside is not available here"
            else:
                problem = f"unknown action {action!r}: use one of {', '.join(ACTIONS)}"
        if problem is not None:
            return self.refuse(source, problem)
        self._wake.set()
        return None

    def refuse(self, source: str, problem: str) -> str:
        """Report a refused message: `ControlError` news and a log line (throttled). Returns `problem`."""
        self.refused += 1
        now = time.monotonic()
        if now - self._log_window_s >= 1.0:
            if self._log_count > LOG_PER_S:
                log.warning("%d more refused control messages in the last second", self._log_count - LOG_PER_S)
            self._log_window_s, self._log_count = now, 0
        self._log_count += 1
        if self._log_count <= LOG_PER_S:
            log.warning("%s: %s", source, problem)
        self.engine.post(ControlError(problem, source))
        return problem

    # ---- the thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                changes, source, self._pending = self._pending, self._pending_source, {}
                panic, self._panic = self._panic, None
                record, self._record = self._record, None
            try:
                if changes:
                    self.engine.set_controls(source=source, **changes)
                    self.applied += 1
                if record is not None:
                    self._set_recording(*record)
                if panic is not None:
                    self.engine.panic()
                    self.engine.post(ActionTaken("panic", panic))
            except MoodstreamError as err:  # e.g. the recording file cannot be written
                self.refuse(source or (record or ("", ""))[1], str(err))
            except Exception as err:  # never let a remote command end the remote
                log.exception("remote command failed")
                self.refuse(source, f"{type(err).__name__}: {err}")
            self._stop.wait(self.min_interval_s)

    def _set_recording(self, on: Optional[bool], source: str) -> None:
        recording = any(o.name == "recorder" for o in self.engine.outputs)
        if on is None:  # toggle
            on = not recording
        if on and not recording:
            path = self.engine.set_recording(self.record_path())
            self.engine.post(ActionTaken("record", source, str(path)))
        elif not on and recording:
            self.engine.set_recording(None)
            self.engine.post(ActionTaken("record", source, ""))


def timestamped_recording(folder: Optional[Path] = None, first: Optional[Path] = None) -> Callable[[], Path]:
    """`record_path` for a Remote: `first` (--record's file) if it does not exist yet, then
    `moodstream-<time>.mid` beside it (or in `folder`, default the working directory)."""

    def next_path() -> Path:
        if first is not None and not first.exists():
            return first
        where = first.parent if first is not None else (folder or Path.cwd())
        return where / time.strftime("moodstream-%Y%m%d-%H%M%S.mid")

    return next_path
