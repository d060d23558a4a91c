"""Recorder: every message the scheduler sends goes into a Standard MIDI File, at its beat position.

Written on `close()` (stop, Ctrl-C, crash: the engine closes outputs in a `finally`, and an `atexit` hook
is the last resort) to a temporary name next to the target, then renamed, so the file is always whole.
Beats are counted from `origin_beats` (the bar line where the recording began).
"""

from __future__ import annotations

import atexit
import logging
import os
import struct
import threading
from array import array
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


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


class Recorder(Output):
    """Records to `path` (.mid), beats counted from `origin_beats`: the bar line it joined at (`joined`), else
    its first message's.

    Events are kept as raw MIDI bytes (about 8 bytes each: an hour of dense music is a megabyte or two,
    where message objects took ~90 MB) and written as a type-0 Standard MIDI File, byte for byte what
    mido would save (running status included)."""

    name = "recorder"
    wants_meta = True

    def __init__(self, path: str | Path, ticks_per_beat: int = TICKS_PER_BEAT):
        super().__init__()
        self.path = check_writable(Path(path), "recording")
        self.ticks_per_beat = ticks_per_beat
        self.origin_beats: float | None = None
        self._ticks = array("q")  # absolute tick of each event
        self._data = bytearray()  # each event: its length (1 byte), then its bytes (meta events too)
        self._has_tempo = False
        self._lock = threading.Lock()
        self.written = False
        atexit.register(self.close)

    def joined(self, bar_beat: float) -> None:
        if self.origin_beats is None:
            self.origin_beats = bar_beat

    def _send(self, msg: mido.Message) -> None:
        beat = float(msg.time)
        if self.origin_beats is None:
            self.origin_beats = beat
        tick = max(0, round((beat - self.origin_beats) * self.ticks_per_beat))
        data = bytes(msg.bytes())
        if len(data) > 255 or 0xF0 <= data[0] < 0xFF:  # system messages have no place in a file
            log.debug("recorder: %s not recorded", msg.type)
            return
        with self._lock:
            self._ticks.append(tick)
            self._data.append(len(data))
            self._data += data
            self._has_tempo = self._has_tempo or msg.type == "set_tempo"

    def panic(self) -> None:
        """Nothing to add: the note_offs the scheduler sends before a panic are already recorded."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._ticks)

    @property
    def buffer_bytes(self) -> int:
        """Memory the recorded events take (they grow with the recording, by design)."""
        with self._lock:
            return len(self._data) + self._ticks.itemsize * len(self._ticks)

    def smf_bytes(self) -> bytes:
        """The recording so far as a type-0 Standard MIDI File (events in time order, send order within
        a tick; 120 bpm when no tempo was recorded)."""
        with self._lock:
            ticks, data, has_tempo = self._ticks[:], bytes(self._data), self._has_tempo
        starts, position = [], 0
        for _ in range(len(ticks)):
            starts.append(position)
            position += 1 + data[position]
        order = range(len(ticks))
        if any(a > b for a, b in zip(ticks, ticks[1:])):
            order = sorted(order, key=ticks.__getitem__)  # stable
        track = bytearray()
        if not has_tempo:
            track += b"\x00" + bytes(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)).bytes())
        last, running_status = 0, None
        for i in order:
            track += _vlq(ticks[i] - last)
            last = ticks[i]
            start = starts[i]
            event = data[start + 1:start + 1 + data[start]]
            if event[0] == 0xFF:  # meta
                running_status = None
            elif event[0] == running_status:
                event = event[1:]
            else:
                running_status = event[0]
            track += event
        track += b"\x00\xff\x2f\x00"  # end of track
        header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, self.ticks_per_beat)
        return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)

    def flush(self) -> Path:
        """Write what was recorded so far (temp name, then rename)."""
        tmp = temp_path(self.path)
        tmp.write_bytes(self.smf_bytes())
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
            log.info("recording written to %s (%d messages)", self.path, len(self))
        except OSError as err:
            raise MoodstreamError(f"cannot write recording {self.path}: {err.strerror or err}") from err
