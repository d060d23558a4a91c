"""`moodstream send [HOST:]PORT ADDRESS [ARGS…]`: send one OSC message (for scripts and tests); with `--wait S`,
print the OSC messages that come back to the sending socket for S seconds (subscribe first to get feedback).
Arguments: whole numbers go as int, other numbers as float, the rest as strings; `s:TEXT` forces a string.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time

from model.errors import MoodstreamError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "send", help="send one OSC message to a running moodstream (play/stream --osc)",
        description="Send one OSC message by UDP, e.g. `moodstream send 9000 /moodstream/mood tense`. Whole "
                    "numbers go as int, other numbers as float, the rest as strings (s:TEXT forces a string).")
    p.add_argument("target", metavar="[HOST:]PORT", help="where moodstream listens (default host 127.0.0.1)")
    p.add_argument("address", help="OSC address, e.g. /moodstream/genre")
    p.add_argument("args", nargs="*", help="arguments")
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="then print what comes back to this socket for S seconds (one message a line), e.g. after "
                        "/moodstream/subscribe with no port")
    p.set_defaults(func=run)


def osc_arg(text: str):
    """The OSC value a command-line word stands for."""
    if text.startswith("s:"):
        return text[2:]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if value == value and abs(value) != float("inf") else text


def run(args: argparse.Namespace) -> int:
    from streamer.osc import build_message, parse_packet, parse_target

    host, port = parse_target(args.target, "send")
    if port == 0:
        raise MoodstreamError(f"send {args.target!r}: port 0 cannot be sent to: give the port moodstream listens on")
    if not args.address.startswith("/"):
        raise MoodstreamError(f"send: address {args.address!r} must start with / (e.g. /moodstream/mood)")
    if not 0 <= args.wait <= 3600:
        raise MoodstreamError(f"--wait {args.wait:g} must be from 0 to 3600 seconds")
    values = [osc_arg(a) for a in args.args]
    try:
        data = build_message(args.address, values)
    except Exception as err:  # python-osc's BuildError, e.g. an int out of 32 bits
        raise MoodstreamError(f"send: cannot build the message: {err}") from err
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(data, (host, port))
        except OSError as err:
            raise MoodstreamError(f"send to {host}:{port}: {err.strerror or err}") from err
        deadline = time.monotonic() + args.wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                reply, _ = sock.recvfrom(65535)
            except OSError:  # e.g. nothing listens there (ICMP port unreachable)
                break
            try:
                for address, params in parse_packet(reply):
                    print(" ".join([address, *(str(p) for p in params)]), flush=True)
            except ValueError as err:
                print(f"moodstream: warning: {err}", file=sys.stderr)
    return 0
