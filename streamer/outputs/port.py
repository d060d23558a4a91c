"""MIDI ports through python-rtmidi: `PortOutput` (a virtual port named `moodstream` a DAW can read, or an
existing port given by name) and `SyncInput` (a virtual input that feeds another device's MIDI clock and
start/stop/continue to an `ExternalTimebase`).

The API is chosen explicitly — ALSA, then JACK (a bare `rtmidi.MidiOut()` picks ALSA and fails where there
is none); the error lists what was tried. On JACK a small watcher client notices the server going away, so
the next send fails with a clear message instead of messages vanishing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
from typing import Optional

import mido

from model.errors import MoodstreamError
from streamer.outputs.base import Output, OutputError, quiet_stderr

log = logging.getLogger(__name__)

PORT_NAME = "moodstream"
SYNC_PORT_NAME = "moodstream-sync"


def _candidate_apis() -> list[tuple[str, int]]:
    import rtmidi

    compiled = set(rtmidi.get_compiled_api())
    if sys.platform.startswith("linux"):
        wanted = [("ALSA", rtmidi.API_LINUX_ALSA), ("JACK", rtmidi.API_UNIX_JACK)]
    elif sys.platform == "darwin":
        wanted = [("CoreMIDI", rtmidi.API_MACOSX_CORE), ("JACK", rtmidi.API_UNIX_JACK)]
    else:
        wanted = [("Windows MM", rtmidi.API_WINDOWS_MM)]
    return [(name, api) for name, api in wanted if api in compiled]


def _reason(err: Exception, captured: quiet_stderr) -> str:
    text = str(err).strip()
    if "JACK server not running" in text or "jack server is not running" in captured.text.lower():
        return "no JACK server running"
    if "ALSA sequencer" in text or "/dev/snd/seq" in captured.text:
        return "no ALSA sequencer (/dev/snd/seq)"
    return text.split("::")[-1].strip() or type(err).__name__


def open_rtmidi(direction: str, client_name: str, virtual_name: str, existing: Optional[str] = None):
    """An rtmidi MidiOut/MidiIn with a virtual port `virtual_name`, or connected to the existing port whose
    name contains `existing`; returns (object, API name, port name). One-line error listing what was tried."""
    import rtmidi

    cls = rtmidi.MidiOut if direction == "out" else rtmidi.MidiIn
    tried = []
    for api_name, api in _candidate_apis():
        captured = quiet_stderr()
        try:
            with captured:
                midi = cls(rtapi=api, name=client_name)
        except rtmidi.RtMidiError as err:
            tried.append(f"{api_name}: {_reason(err, captured)}")
            continue
        try:
            if existing is None:
                midi.open_virtual_port(virtual_name)
                return midi, api_name, virtual_name
            ports = midi.get_ports()
            matches = [i for i, p in enumerate(ports) if p == existing] or \
                      [i for i, p in enumerate(ports) if existing.lower() in p.lower()]
            if matches:
                midi.open_port(matches[0], name=virtual_name)
                return midi, api_name, ports[matches[0]]
            shown = ", ".join(repr(p) for p in ports) or "none"
            tried.append(f"{api_name}: no port named {existing!r} (ports: {shown})")
        except rtmidi.RtMidiError as err:
            tried.append(f"{api_name}: {_reason(err, captured)}")
        midi.delete()
    if not tried:
        raise MoodstreamError("python-rtmidi was built without a MIDI API for this system; reinstall python-rtmidi")
    hint = ("check the name (`aconnect -l` or `jack_lsp` list ports), or leave out --port to get a virtual port "
            f"{virtual_name!r}") if existing else \
        "load the ALSA sequencer (`sudo modprobe snd-seq`) or start a JACK server (`jackd -d dummy &`)"
    raise MoodstreamError(f"cannot open MIDI {'port ' + repr(existing) if existing else 'virtual port'} "
                          f"(tried {'; '.join(tried)}): {hint}")


class JackWatch:
    """A JACK client that only listens for the server shutting down (libjack through ctypes)."""

    JACK_NO_START_SERVER = 0x01

    def __init__(self, name: str = "moodstream-watch"):
        self.gone = threading.Event()
        self._client = None
        path = ctypes.util.find_library("jack")
        if path is None:
            return
        lib = ctypes.CDLL(path)
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        self._callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, self._callback_type, ctypes.c_void_p]
        lib.jack_activate.argtypes = [ctypes.c_void_p]
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        status = ctypes.c_int()
        with quiet_stderr():
            client = lib.jack_client_open(name.encode(), self.JACK_NO_START_SERVER, ctypes.byref(status))
        if not client:
            return
        self._lib, self._client = lib, client
        self._callback = self._callback_type(lambda arg: self.gone.set())  # kept alive with self
        lib.jack_on_shutdown(client, self._callback, None)
        lib.jack_activate(client)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        if self._client is not None and not self.gone.is_set():
            with quiet_stderr():
                self._lib.jack_client_close(self._client)
        self._client = None


def close_client(midi, watch: Optional["JackWatch"]) -> None:
    """Close an rtmidi client and its JACK watch, quietly (only while its server is up: closing a client of
    a dead server can crash libjack)."""
    if watch is not None:
        watch.close()
    with quiet_stderr():
        midi.close_port()
        midi.delete()


def jack_server_up() -> bool:
    """True if a JACK server is running (a client connects without starting one)."""
    probe = JackWatch("moodstream-probe")
    up = probe.connected
    probe.close()
    return up


class Reconnector:
    """After a JACK server went away: every `interval_s`, if a server runs again, call `reopen()` (on this
    object's own thread, never the scheduler's); `done` is set once it returned without raising."""

    def __init__(self, what: str, reopen, interval_s: float = 1.0):
        self.what = what
        self.done = threading.Event()
        self._reopen = reopen
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"moodstream-reconnect-{what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if jack_server_up():
                    self._reopen()
                    self.done.set()
                    log.info("%s: reconnected to the JACK server", self.what)
                    return
            except Exception as err:  # not back yet: try again
                log.debug("%s: reconnecting failed (%s)", self.what, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)


class PortOutput(Output):
    """Sends every message out of an rtmidi port. `clock=True` also sends MIDI clock and transport.
    On JACK, a server that stops fails the output (the scheduler reports it), and the port is opened again
    when a server runs again (`reconnected()` tells the scheduler to take the output back)."""

    name = "port"

    def __init__(self, port: Optional[str] = None, clock: bool = True, virtual_name: str = PORT_NAME,
                 reconnect_interval_s: float = 1.0):
        super().__init__()
        self._wanted, self._virtual_name = port, virtual_name
        self.midi, self.api, self.port_name = open_rtmidi("out", PORT_NAME, virtual_name, port)
        self.wants_clock = clock
        self.can_reconnect = self.api == "JACK"
        self._watch = JackWatch() if self.api == "JACK" else None
        self._reconnect_interval_s = reconnect_interval_s
        self._reconnector: Optional[Reconnector] = None
        self._dead: list = []  # rtmidi objects of a server that went away (never deleted: libjack may crash)
        where = f"virtual port {self.port_name!r}" if port is None else f"port {self.port_name!r}"
        log.info("MIDI out through %s (%s)", where, self.api)

    def _server_gone(self) -> bool:
        return self._watch is not None and self._watch.gone.is_set()

    def _send(self, msg: mido.Message) -> None:
        if self._server_gone():
            if self._reconnector is None:
                self._reconnector = Reconnector("port", self._reopen, self._reconnect_interval_s)
            raise OutputError(f"the JACK server stopped, so MIDI port {self.port_name!r} is gone: restart JACK "
                              f"(the port comes back by itself)")
        self.midi.send_message(msg.bytes())

    def _reopen(self) -> None:
        midi, api, port_name = open_rtmidi("out", PORT_NAME, self._virtual_name, self._wanted)
        self._dead.append(self.midi)
        self.midi, self.api, self.port_name = midi, api, port_name
        self._watch = JackWatch() if api == "JACK" else None

    def _close(self) -> None:
        if self._reconnector is not None:
            self._reconnector.stop()
        if not self._server_gone():  # closing a client of a dead server can crash libjack: leave it
            close_client(self.midi, self._watch)

    def status(self) -> str:
        if self._server_gone():
            return "failed: JACK server stopped (reconnecting)"
        return super().status()


class SyncInput:
    """A MIDI input (virtual `moodstream-sync`, or an existing port) whose clock, start, continue and stop
    drive an `ExternalTimebase`. Polled from its own thread (python-rtmidi's JACK callbacks can deliver a
    message twice under load); pulse times come from the driver's timestamps, not from the polling."""

    POLL_S = 0.001
    RESYNC_S = 0.02  # re-anchor the timestamp chain when it drifts this far from the clock

    def __init__(self, timebase, port: Optional[str] = None):
        self.timebase = timebase
        self.clock = timebase.clock
        self.midi, self.api, self.port_name = open_rtmidi("in", SYNC_PORT_NAME, "in", port)
        self.midi.ignore_types(sysex=True, timing=False, active_sense=True)
        self._stop = threading.Event()
        self._last_s: Optional[float] = None
        self._thread = threading.Thread(target=self._poll, name="moodstream-sync", daemon=True)
        self._thread.start()
        log.info("following MIDI clock from %s (%s)", self.port_name, self.api)

    def _poll(self) -> None:
        while not self._stop.is_set():
            event = self.midi.get_message()
            if event is None:
                self._stop.wait(self.POLL_S)
                continue
            message, delta_s = event
            now = self.clock.now()
            at_s = now if self._last_s is None else self._last_s + delta_s
            if abs(now - at_s) > self.RESYNC_S:
                at_s = now
            self._last_s = at_s
            self._handle(message, at_s)

    def _handle(self, message, at_s: float) -> None:
        status = message[0] if message else None
        if status == 0xF8:
            self.timebase.on_clock(at_s)
        elif status == 0xFA:
            self.timebase.on_start()
        elif status == 0xFB:
            self.timebase.on_continue()
        elif status == 0xFC:
            self.timebase.on_stop()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        with quiet_stderr():
            self.midi.close_port()
            self.midi.delete()
