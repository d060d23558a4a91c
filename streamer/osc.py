"""OSC in and out (python-osc over UDP): `OscServer` turns `/moodstream/...` messages into `Remote` commands
and sends feedback to subscribers; `parse_target`, `build_message` and `send_message` serve `moodstream send`.

Addresses in (`ADDRESSES`): genre s, mood s, conditions s s, temperature f, top_p f, guidance f, tempo f|"model",
switch_at s, panic, record i, stop, subscribe [host] port, unsubscribe [host] port. Feedback out to each
subscriber: `/moodstream/bar i` at each bar line, `/moodstream/switch/pending s s i`,
`/moodstream/switch/applied s s i` (genre, mood, bar), `/moodstream/error s` (refused messages from anyone,
generator and output faults). A malformed packet, an unknown address or a wrong type is one `ControlError`
(and one throttled log line); nothing here stops the stream. It listens on loopback unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
from typing import Optional

from model.errors import MoodstreamError
from streamer.news import (BarStarted, ControlError, GeneratorFailed, OutputFailed, SwitchApplied,
                           SwitchPending)

log = logging.getLogger(__name__)

PREFIX = "/moodstream/"
DEFAULT_HOST = "127.0.0.1"
MAX_SUBSCRIBERS = 16
MAX_PACKET = 65535
# address → what it takes, as the error message shows it
ADDRESSES = {
    "genre": "s", "mood": "s", "conditions": "s s", "temperature": "f", "top_p": "f", "guidance": "f",
    "tempo": "f | s \"model\"", "switch_at": "s", "panic": "", "record": "i", "stop": "",
    "subscribe": "[s host] i port", "unsubscribe": "[s host] i port",
}
KNOB_FIELDS = {"temperature": "temperature", "top_p": "top_p", "guidance": "guidance_w", "tempo": "bpm"}


def parse_target(text: str, what: str = "--osc") -> tuple[str, int]:
    """`[HOST:]PORT` → (host, port); the host defaults to loopback. One-line MoodstreamError otherwise."""
    value = str(text).strip()
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535 or (sep and not host):
        raise MoodstreamError(f"{what} {text!r}: write [HOST:]PORT, e.g. 9000 or 0.0.0.0:9000 (port 0-65535)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP))
        except (OSError, ValueError):
            return False


def build_message(address: str, args=()) -> bytes:
    """One OSC message as bytes (ints as i, floats as f, str as s, bools as T/F)."""
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def send_message(host: str, port: int, address: str, args=(), sock: Optional[socket.socket] = None) -> None:
    """Send one OSC message by UDP (from `sock` if given)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    own = sock is None
    sock = sock or socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.sendto(build_message(address, args), (host, port))
    finally:
        if own:
            sock.close()


def parse_packet(data: bytes) -> list[tuple[str, list]]:
    """(address, args) of each message in a packet (bundles flattened); ValueError for a malformed one."""
    from pythonosc.osc_packet import OscPacket

    try:
        return [(timed.message.address, list(timed.message.params)) for timed in OscPacket(data).messages]
    except Exception as err:  # python-osc raises ParseError, and sometimes IndexError/struct.error on junk
        raise ValueError(f"malformed OSC packet ({len(data)} bytes): {err}") from None


class OscServer:
    """Listens on (host, port) for `/moodstream/...` messages (its own thread) and feeds them to `remote`;
    sends feedback to subscribers from the engine's news (`news`, a NewsHub). `port` 0 picks a free one
    (read it back from `.port`). Binding fails as a one-line MoodstreamError."""

    def __init__(self, remote, news, host: str = DEFAULT_HOST, port: int = 0):
        self.remote = remote
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as err:
            self.sock.close()
            raise MoodstreamError(f"--osc {host}:{port}: cannot listen there: {err.strerror or err}") from err
        self.host, self.port = host, self.sock.getsockname()[1]
        self.subscribers: list[tuple[str, int]] = []
        self._sub_lock = threading.Lock()
        self._stop = threading.Event()
        self.received = 0  # messages read
        self._thread = threading.Thread(target=self._run, name="moodstream-osc", daemon=True)
        self._news = news
        news.subscribe(self._feedback)

    @property
    def public(self) -> bool:
        return not is_loopback(self.host)

    def start(self) -> "OscServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._news.unsubscribe(self._feedback)
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sock.close()

    # ---- in ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.1)
                if not ready:
                    continue
                data, sender = self.sock.recvfrom(MAX_PACKET)
            except OSError as err:
                if self._stop.is_set():
                    return
                log.warning("OSC: receiving failed: %s", err)
                continue
            try:
                self.handle_packet(data, sender)
            except Exception as err:  # never let one packet end the server
                log.exception("OSC: handling a packet failed")
                self.remote.refuse(self._source(sender), f"internal error: {type(err).__name__}: {err}")

    @staticmethod
    def _source(sender) -> str:
        return f"osc {sender[0]}:{sender[1]}"

    def handle_packet(self, data: bytes, sender: tuple) -> None:
        source = self._source(sender)
        try:
            messages = parse_packet(data)
        except ValueError as err:
            self.remote.refuse(source, str(err))
            return
        for address, args in messages:
            self.received += 1
            problem = self.handle(address, args, sender)
            if problem is not None:
                self.remote.refuse(source, f"{address}: {problem}")

    def handle(self, address: str, args: list, sender: tuple) -> Optional[str]:
        """Apply one message; None, or what is wrong with it (the caller reports it)."""
        source = self._source(sender)
        name = address[len(PREFIX):] if address.startswith(PREFIX) else None
        if name not in ADDRESSES:
            return f"unknown address: use {PREFIX}" + f", {PREFIX}".join(ADDRESSES)
        types = ADDRESSES[name]
        wrong = f"takes {types or 'no arguments'}, got {_describe(args)}"
        if name in ("genre", "mood"):
            if len(args) != 1 or not isinstance(args[0], str):
                return wrong
            self.remote.change(source, **{name: args[0]})  # reports its own problems
            return None
        if name == "conditions":
            if len(args) != 2 or not all(isinstance(a, str) for a in args):
                return wrong
            self.remote.change(source, genre=args[0], mood=args[1])  # reports its own problems
            return None
        if name in KNOB_FIELDS:
            if len(args) != 1:
                return wrong
            value = args[0]
            if name == "tempo" and isinstance(value, str) and value.strip().lower() == "model":
                value = None
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                return wrong
            self.remote.change(source, **{KNOB_FIELDS[name]: value})  # reports its own problems
            return None
        if name in ("panic", "stop"):
            if args:
                return wrong
            self.remote.act(source, name)  # reports its own problems
            return None
        if name == "record":
            if len(args) != 1 or not isinstance(args[0], (int, bool)):
                return wrong
            self.remote.act(source, "record", bool(args[0]))  # reports its own problems
            return None
        if name == "switch_at":
            if len(args) != 1 or not isinstance(args[0], str):
                return wrong
            self.remote.act(source, "switch_at", args[0])  # reports its own problems
            return None
        # subscribe / unsubscribe: [host] port, or nothing = the sender itself
        if len(args) == 0:
            target = (sender[0], sender[1])
        elif len(args) == 1 and isinstance(args[0], int) and not isinstance(args[0], bool):
            target = (sender[0], args[0])
        elif len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], int):
            target = (args[0], args[1])
        else:
            return wrong
        if not 1 <= target[1] <= 65535:
            return f"port {target[1]} is out of range: use 1-65535"
        return self._subscribe(target, name == "subscribe", source)

    def _subscribe(self, target: tuple[str, int], on: bool, source: str) -> Optional[str]:
        from streamer.news import ActionTaken

        with self._sub_lock:
            if on and target not in self.subscribers:
                if len(self.subscribers) >= MAX_SUBSCRIBERS:
                    return f"too many subscribers ({MAX_SUBSCRIBERS}): unsubscribe one first"
                self.subscribers.append(target)
            elif not on and target in self.subscribers:
                self.subscribers.remove(target)
        self.remote.engine.post(ActionTaken("subscribe" if on else "unsubscribe", source, f"{target[0]}:{target[1]}"))
        return None

    # ---- out --------------------------------------------------------------------------------------------
    def _feedback(self, news) -> None:
        """The news listener: what subscribers hear."""
        match news:
            case BarStarted():
                self.send_all(PREFIX + "bar", [news.bar_number])
            case SwitchPending():
                self.send_all(PREFIX + "switch/pending", [news.controls.genre, news.controls.mood, news.at_bar])
            case SwitchApplied():
                self.send_all(PREFIX + "switch/applied", [news.conditions.genre, news.conditions.mood,
                                                          news.bar_number])
            case ControlError():
                self.send_all(PREFIX + "error", [f"{news.source}: {news.message}"])
            case GeneratorFailed():
                self.send_all(PREFIX + "error", [news.message])
            case OutputFailed():
                self.send_all(PREFIX + "error", [f"output {news.name} failed: {news.message}"])

    def send_all(self, address: str, args: list) -> None:
        with self._sub_lock:
            targets = list(self.subscribers)
        if not targets:
            return
        data = build_message(address, args)
        for target in targets:
            try:
                self.sock.sendto(data, target)
            except OSError as err:  # a subscriber that went away must not stop the others
                log.debug("OSC: sending to %s:%d failed: %s", target[0], target[1], err)


def _describe(args: list) -> str:
    if not args:
        return "no arguments"
    names = {str: "s", int: "i", float: "f", bool: "T/F", bytes: "b"}
    return " ".join(names.get(type(a), type(a).__name__) for a in args)
