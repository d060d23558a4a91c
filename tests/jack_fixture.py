"""A real JACK server for tests: `jackd --no-realtime -S -d dummy` under a unique name (JACK_DEFAULT_SERVER),
started before the test, waited for, and stopped after. Import the fixture into a test module:
`from jack_fixture import jack_server  # noqa: F401` (tests/ is on sys.path under pytest).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time
import uuid

import pytest

JACK_NO_START_SERVER = 0x01


def jack_is_up(name: str) -> bool:
    """True if a client can connect to the server `name` (without starting one)."""
    lib = ctypes.CDLL(ctypes.util.find_library("jack"))
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                     ctypes.c_char_p]
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int()
    JackServerName = 0x04
    client = lib.jack_client_open(b"moodstream-probe", JACK_NO_START_SERVER | JackServerName, ctypes.byref(status),
                                  name.encode())
    if not client:
        return False
    lib.jack_client_close(client)
    return True


class JackServer:
    def __init__(self, name: str, log_path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # -S (synchronous mode): each cycle waits for every client to finish. jackd's default (asynchronous)
        # starts the next cycle on time even if a client has not run yet, and a sender's next cycle then
        # overwrites the MIDI the late reader never read: messages vanish (whole cycles: a clock pulse and
        # the note-offs on the same tick). Without realtime threads, on a small machine busy with the model,
        # a client is often late (jackd logs "client = reader was not finished"); a DAW runs realtime.
        self.process = subprocess.Popen(["jackd", "--no-realtime", "-S", "-n", name, "-d", "dummy", "-r", "48000",
                                         "-p", "256"], stdout=self._log, stderr=subprocess.STDOUT)

    def wait_up(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jackd exited ({self.process.returncode}): {self.log_path.read_text()[-500:]}")
            if jack_is_up(self.name):
                return
            time.sleep(0.1)
        raise RuntimeError(f"jackd did not come up in {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture
def jack_server(monkeypatch, tmp_path):
    """A running JACK server that every JACK client of this test connects to; stopped afterwards."""
    if shutil.which("jackd") is None or ctypes.util.find_library("jack") is None:
        pytest.fail("jackd / libjack not installed: run scripts/setup-system.sh (package jackd2)")
    name = f"moodstream-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    server = JackServer(name, tmp_path / "jackd.log")
    try:
        server.wait_up()
        yield server
    finally:
        server.stop()
