"""`--events F.jsonl`: one JSON object per line for each bar line, switch pending / applied (with `beat` for a
beat switch), control change from outside, output fault and recovery, underrun, error and the stop, written
from the engine's news.

Every line has `event`, `t_s` (engine clock seconds since the log opened, when the news was posted: simulated
time in a render, so a render's log is the same every time) and, where there is one, `bar` (the playback
bar number). Lines are flushed as they are written (a reader may `tail -f`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from model.errors import MoodstreamError
from streamer.news import (ActionTaken, BarStarted, ControlError, ControlsChanged, GeneratorFailed, OutputFailed,
                           OutputRecovered, PlaybackStopped, SwitchApplied, SwitchPending, SwitchSounded, Underrun)

log = logging.getLogger(__name__)


def _beat(at_beat: Optional[int]) -> dict:
    """A beat switch's lines add `beat` (beats after the bar line); the others stay as they were."""
    return {} if at_beat is None else {"beat": at_beat}


def event_record(news) -> Optional[dict]:
    """The log line for one news object (None: not logged)."""
    match news:
        case BarStarted():
            return {"event": "bar", "bar": news.bar_number, "genre": news.conditions.genre,
                    "mood": news.conditions.mood, "tempo_qpm": round(news.tempo_qpm, 3),
                    "beats": news.length_beats, "switch_id": news.switch_id}
        case SwitchPending():
            return {"event": "switch_pending", "bar": news.at_bar, "genre": news.controls.genre,
                    "mood": news.controls.mood, "switch_id": news.switch_id, **_beat(news.at_beat)}
        case SwitchApplied():
            return {"event": "switch_applied", "bar": news.bar_number, "genre": news.conditions.genre,
                    "mood": news.conditions.mood, "switch_id": news.switch_id, **_beat(news.at_beat)}
        case SwitchSounded():
            return {"event": "switch_sounded", "bar": news.bar_number, "switch_id": news.switch_id,
                    "latency_ms": round(news.latency_ms, 3), "late_ms": round(news.late_ms, 3)}
        case ControlsChanged():
            return {"event": "controls", "source": news.source, "bar": news.at_bar, "changes": dict(news.changes())}
        case ActionTaken():
            return {"event": "action", "action": news.action, "source": news.source, "detail": news.detail}
        case ControlError():
            return {"event": "control_error", "source": news.source, "message": news.message}
        case Underrun():
            return {"event": "underrun", "bar": news.bar_number}
        case OutputFailed():
            return {"event": "output_failed", "output": news.name, "message": news.message}
        case OutputRecovered():
            return {"event": "output_recovered", "output": news.name, "bar": news.bar_number}
        case GeneratorFailed():
            return {"event": "error", "message": news.message, "fatal": news.fatal}
        case PlaybackStopped():
            return {"event": "stopped", "bars_played": news.bars_played, "reason": news.reason}
    return None


class EventLog:
    """Writes `event_record`s of the news it is given (`listener(news, posted_s)`, a timed NewsHub
    listener) to `path`. Opening fails as a one-line MoodstreamError."""

    def __init__(self, path: str | Path, start_s: float = 0.0):
        self.path = Path(path)
        self.start_s = start_s
        try:
            self.file = open(self.path, "w", encoding="utf-8")
        except OSError as err:
            raise MoodstreamError(f"--events {path}: cannot write: {err.strerror or err}") from err
        self.lines = 0
        self.failed = False

    def listener(self, news, posted_s: float) -> None:
        record = event_record(news)
        if record is None or self.failed:
            return
        line = {"event": record.pop("event"), "t_s": round(posted_s - self.start_s, 6), **record}
        try:
            self.file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.file.flush()
            self.lines += 1
        except (OSError, ValueError) as err:  # a full disk must not stop the music: say so once
            self.failed = True
            log.error("event log %s: writing failed (%s); no more events are logged", self.path, err)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:
            log.error("event log %s: closing failed (%s)", self.path, err)


def open_event_log(path: str | Path, engine) -> EventLog:
    """An EventLog on `engine`'s news, times counted from now on its clock."""
    events = EventLog(path, engine.clock.now())
    engine.news.subscribe(events.listener, timed=True)
    return events
