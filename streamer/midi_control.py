"""MIDI control input (`--control-in [PORT]`): `ControlInput` opens a virtual input `moodstream-control` (ALSA,
else JACK, like the output port) or connects to an existing port, and turns each program change, cc and
note-on a `ControlMap` binds into a `Remote` command with source "midi PORT", so controller changes take the
same path as OSC: checked, merged, the last one wins, shown on the TUI. Unbound messages are ignored.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from streamer.control_map import ControlMap
from streamer.outputs.port import JackWatch, close_client, open_rtmidi

log = logging.getLogger(__name__)

CONTROL_PORT_NAME = "moodstream-control"


class ControlInput:
    """Reads a MIDI input on its own thread (polled: python-rtmidi's JACK callbacks can deliver a message
    twice under load) and feeds `remote`. `port` None: a virtual input; else the port whose name contains it.
    Opening fails as a one-line MoodstreamError listing what was tried."""

    POLL_S = 0.005  # a switch lands on a bar line: a few ms of polling are nothing

    def __init__(self, remote, control_map: ControlMap, port: Optional[str] = None):
        self.remote = remote
        self.control_map = control_map
        self.midi, self.api, self.port_name = open_rtmidi("in", CONTROL_PORT_NAME, CONTROL_PORT_NAME, port)
        self.midi.ignore_types(sysex=True, timing=True, active_sense=True)
        self.source = f"midi {self.port_name}"
        self._watch = JackWatch("moodstream-control-watch") if self.api == "JACK" else None
        self._last_cc: dict = {}
        self.received = 0  # messages read
        self.commands = 0  # of them, bound to a command
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="moodstream-control", daemon=True)

    def start(self) -> "ControlInput":
        self._thread.start()
        log.info("MIDI control in on %r (%s), map %s", self.port_name, self.api, self.control_map.path)
        return self

    def _server_gone(self) -> bool:
        return self._watch is not None and self._watch.gone.is_set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self._server_gone():
                self.remote.refuse(self.source, "the JACK server stopped: MIDI control input is gone until "
                                                "moodstream starts again")
                return
            event = self.midi.get_message()
            if event is None:
                self._stop.wait(self.POLL_S)
                continue
            self.received += 1
            try:
                self.handle(event[0])
            except Exception as err:  # never let one message end the input
                log.exception("MIDI control: handling %s failed", event[0])
                self.remote.refuse(self.source, f"internal error: {type(err).__name__}: {err}")

    def handle(self, message) -> None:
        """One raw MIDI message (a list of bytes) → a Remote command, if the map binds it."""
        command = self.control_map.command(message, self._last_cc)
        if command is None:
            return
        self.commands += 1
        if command.action is not None:
            self.remote.act(self.source, command.action, command.value)  # reports its own problems
        else:
            self.remote.change(self.source, **command.changes)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if not self._server_gone():  # closing a client of a dead server can crash libjack: leave it
            close_client(self.midi, self._watch)
