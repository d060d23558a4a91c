"""Recorder: every message the scheduler sends goes into a Standard MIDI File, at its beat position.

Written on `close()` (stop, Ctrl-C, crash: the engine closes outputs in a `finally`, and an `atexit` hook
is the last resort) to a temporary name next to the target, then renamed, so the file is always whole.
Beats are counted from `origin_beats` (the bar line where the recording began).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path

import mido

from model.errors import MoodstreamError
from streamer.outputs.base import Output

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480


def check_writable(path: Path, what: str) -> Path:
    """`path` if a file can be created there; else a one-line error naming it."""
    path = Path(path)
    if path.is_dir():
        raise MoodstreamError(f"{what} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise MoodstreamError(f"{what} {path}: folder {path.parent} does not exist; create it or choose another path")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MoodstreamError(f"{what} {path} is not writable; choose another path")
    probe = temp_path(path)  # os.access says yes to root everywhere: create the temp file to be sure
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # a leftover from a killed run: it is ours to reuse
        if not os.access(probe, os.W_OK):
            raise MoodstreamError(f"{what} {path} is not writable ({probe} is in the way); choose another path")
        return path
    except OSError as err:
        raise MoodstreamError(f"{what} {path} is not writable ({err.strerror or err}); choose another path") from err
    os.close(fd)
    os.unlink(probe)
    return path


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


class Recorder(Output):
    """Records to `path` (.mid). `origin_beats` is set by the scheduler when the recorder joins."""

    name = "recorder"
    wants_meta = True

    def __init__(self, path: str | Path, ticks_per_beat: int = TICKS_PER_BEAT):
        super().__init__()
        self.path = check_writable(Path(path), "recording")
        self.ticks_per_beat = ticks_per_beat
        self.origin_beats: float | None = None
        self._events: list[tuple[int, mido.Message]] = []  # (absolute tick, message)
        self._lock = threading.Lock()
        self.written = False
        atexit.register(self.close)

    def _send(self, msg: mido.Message) -> None:
        beat = float(msg.time)
        if self.origin_beats is None:
            self.origin_beats = beat
        tick = max(0, round((beat - self.origin_beats) * self.ticks_per_beat))
        with self._lock:
            self._events.append((tick, msg.copy(time=0)))

    def panic(self) -> None:
        """Nothing to add: the note_offs the scheduler sends before a panic are already recorded."""

    def to_midi(self) -> mido.MidiFile:
        with self._lock:
            events = sorted(self._events, key=lambda e: e[0])  # stable: keeps send order within a tick
        track = mido.MidiTrack()
        if not any(m.type == "set_tempo" for _, m in events):
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0))
        last = 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi = mido.MidiFile(type=0, ticks_per_beat=self.ticks_per_beat)
        midi.tracks.append(track)
        return midi

    def flush(self) -> Path:
        """Write what was recorded so far (temp name, then rename)."""
        tmp = temp_path(self.path)
        self.to_midi().save(str(tmp))
        os.replace(tmp, self.path)
        self.written = True
        return self.path

    def discard(self) -> None:
        """Close without writing anything (the stream never started: nothing half-written is left)."""
        atexit.unregister(self.close)
        self.closed = True

    def _close(self) -> None:
        atexit.unregister(self.close)
        try:
            self.flush()
            log.info("recording written to %s (%d messages)", self.path, len(self._events))
        except OSError as err:
            raise MoodstreamError(f"cannot write recording {self.path}: {err.strerror or err}") from err
