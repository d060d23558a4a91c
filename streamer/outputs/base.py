"""The output protocol: `send(msg)`, `panic()`, `close()`; the scheduler alone calls them, from its thread.

`send` gets a `mido.Message` whose `time` is its position in the stream in quarter-note beats (a float);
live outputs ignore it, the recorder uses it. Outputs that set `wants_clock` also get the MIDI clock
(24 per beat), start/stop/continue and song position; those that set `wants_meta` get `set_tempo`
MetaMessages. An output that fails raises `OutputError` (or anything): the scheduler reports it and
stops using that output while the others go on; one with `can_reconnect` is polled at bar lines
(`reconnected()`, non-blocking) and taken back once it works again.
"""

from __future__ import annotations

import logging
import os

import mido

log = logging.getLogger(__name__)

CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123


class OutputError(RuntimeError):
    """An output cannot go on; the message is one line naming the output and what to do."""


def panic_messages() -> list[mido.Message]:
    """CC123 (all notes off) then CC120 (all sound off) on all 16 channels."""
    return [mido.Message("control_change", channel=c, control=cc, value=0)
            for cc in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF) for c in range(16)]


class Output:
    """Base class: subclasses override `_send` (and `_close`); `send` skips messages once closed."""

    name = "output"
    wants_clock = False  # MIDI clock and transport messages
    wants_meta = False  # set_tempo meta messages
    can_reconnect = False  # after a failure it may come back: the scheduler polls `reconnected()`

    def __init__(self):
        self.closed = False
        self.sent = 0

    def send(self, msg: mido.Message) -> None:
        if self.closed:
            return
        self._send(msg)
        self.sent += 1

    def _send(self, msg: mido.Message) -> None:
        raise NotImplementedError

    def joined(self, bar_beat: float) -> None:
        """The scheduler took this output into a stream at the bar line `bar_beat` (0 before playback)."""

    def panic(self) -> None:
        """Silence everything this output may be sounding (the scheduler has already sent note_offs)."""
        for msg in panic_messages():
            self.send(msg)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def _close(self) -> None:
        pass

    _reconnector = None  # outputs that can come back hold a `port.Reconnector` while they try

    def reconnected(self) -> bool:
        """After a failure: True once the output works again (the scheduler takes it back). Must not block.
        True once per recovery: when a running `_reconnector` has succeeded."""
        if self._reconnector is not None and self._reconnector.done.is_set():
            self._reconnector = None
            return True
        return False

    def discard(self) -> None:
        """Close without leaving a file behind (file outputs override it); for a stream that never started."""
        self.close()

    def status(self) -> str:
        return "closed" if self.closed else "ok"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.status()}>"


class quiet_stderr:
    """Silence the C libraries' stderr (FluidSynth, ALSA, JACK print there) while probing a device;
    `text` holds what they wrote, for the one-line error and the debug log."""

    def __enter__(self):
        import sys
        import tempfile

        self.text = ""
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        if self.text.strip():
            log.debug("library messages: %s", self.text.strip())

    def first_error(self) -> str:
        """The most telling line the libraries printed (an 'error' line if any)."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        line = (errors or lines or [""])[-1]
        return line.split("error:", 1)[-1].strip()
