"""A real JACK server (started by the fixture), the real `moodstream` virtual port and a real reader port:
every message arrives in order; MIDI clock is 24 per beat; a server that dies mid-run fails only that
output; external sync follows another port's clock, start and stop."""

from __future__ import annotations

import threading
import time

import pytest
from jack_fixture import jack_server  # noqa: F401
from manual_clock import wait_until

from streamer.clock import MonotonicClock
from streamer.controls import Controls
from streamer.engine import BarStarted, Engine, EngineConfig, OutputFailed, load_model
from streamer.generator import GeneratorConfig
from streamer.outputs.null import MemoryOutput

pytestmark = pytest.mark.jack


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


def jack_midi(kind: str, name: str):
    import rtmidi

    cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    return cls(rtapi=rtmidi.API_UNIX_JACK, name=name)


class Reader:
    """A JACK MIDI input connected to the port whose name contains `port_substring`, polled on a thread
    (python-rtmidi's JACK callback mode can hand over a message twice under load; polling never does)."""

    def __init__(self, port_substring: str, name: str = "reader"):
        import rtmidi

        self.midi = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=name, queue_size_limit=1 << 16)
        self.midi.ignore_types(sysex=True, timing=False, active_sense=True)
        ports = self.midi.get_ports()
        matches = [i for i, p in enumerate(ports) if port_substring in p]
        assert matches, f"no port {port_substring!r} among {ports}"
        self.received: list[list[int]] = []
        self._stop = threading.Event()
        self.midi.open_port(matches[0])
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._stop.is_set():
            event = self.midi.get_message()
            if event:
                self.received.append(event[0])
            else:
                time.sleep(0.001)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.midi.close_port()


def test_virtual_port_delivers_every_message_in_order_with_24_clocks_per_beat(jack_server, tiny):
    from streamer.outputs.port import PortOutput

    model, vocab = tiny
    clock = MonotonicClock()
    port = PortOutput(clock=True)
    assert (port.api, port.port_name) == ("JACK", "moodstream")
    reader = Reader("moodstream")
    received = reader.received
    reference = MemoryOutput(clock, name="reference", wants_clock=True)  # what the scheduler sent
    news = []
    engine = Engine(EngineConfig(max_bars=3, start_delay_s=0.2, generator=GeneratorConfig(seed=2)),
                    [port, reference], clock, Controls(bpm=240.0), on_news=news.append, model=model, vocab=vocab)
    engine.start()
    assert engine.wait(60)
    engine.stop()
    expected = [list(m.bytes()) for m in reference.messages]
    assert wait_until(lambda: len(received) >= len(expected))
    reader.close()
    assert received == expected  # every message, in order, byte for byte
    notes = [m for m in expected if m[0] & 0xF0 == 0x90]
    assert len(notes) > 10
    start, stop = received.index([0xFA]), received.index([0xFC])
    assert received[start - 1] == [0xF2, 0, 0]  # song position 0 before Start
    beats = sum(n.length_beats for n in news if isinstance(n, BarStarted))
    assert received[start:stop].count([0xF8]) == 24 * beats
    # the end: every note off, then CC123 and CC120 on all 16 channels, then Stop
    assert received[stop - 32:stop] == [[0xB0 | c, cc, 0] for cc in (123, 120) for c in range(16)]
    assert stop == len(received) - 1


def test_existing_port_by_name_and_a_missing_one(jack_server):
    from model.errors import MoodstreamError
    from streamer.outputs.port import PortOutput

    synth = jack_midi("in", "some-synth")
    synth.open_virtual_port("midi_in")
    port = PortOutput(port="some-synth:midi_in", clock=False)
    assert port.port_name == "some-synth:midi_in"
    import mido

    port.send(mido.Message("note_on", note=60, velocity=90))
    got = []

    def arrived():
        event = synth.get_message()
        if event:
            got.append(event[0])
        return got == [[0x90, 60, 90]]

    assert wait_until(arrived)
    port.close()
    with pytest.raises(MoodstreamError) as err:
        PortOutput(port="no-such-port")
    text = str(err.value)
    assert "no port named 'no-such-port'" in text and "JACK" in text and "\n" not in text
    synth.close_port()


def test_jack_server_dying_fails_only_the_port(jack_server, tiny):
    from streamer.outputs.port import PortOutput

    model, vocab = tiny
    clock = MonotonicClock()
    port = PortOutput(clock=False)
    survivor = MemoryOutput(clock, name="survivor")
    news = []
    killed = threading.Event()

    def on_news(item):
        news.append(item)
        if isinstance(item, BarStarted) and item.bar_number == 1 and not killed.is_set():
            killed.set()
            jack_server.stop()  # the server goes away under a live port

    engine = Engine(EngineConfig(max_bars=4, start_delay_s=0.1, generator=GeneratorConfig(seed=3)),
                    [port, survivor], clock, Controls(bpm=240.0), on_news=on_news, model=model, vocab=vocab)
    engine.start()
    assert engine.wait(60)
    engine.stop()  # returns: nothing hangs on the dead server
    failed = [n for n in news if isinstance(n, OutputFailed)]
    assert [f.name for f in failed] == ["port"] and "JACK server stopped" in failed[0].message
    started = [n.bar_number for n in news if isinstance(n, BarStarted)]
    assert started == [0, 1, 2, 3]  # the stream went on
    last_bar_start = [n.start_beat for n in news if isinstance(n, BarStarted)][-1]
    assert any(m.type == "note_on" and m.time >= last_bar_start for m in survivor.messages)
    assert engine.stats().outputs["port"].startswith("failed")


def test_external_sync_follows_clock_start_and_stop(jack_server, tiny):
    from streamer.outputs.port import SyncInput

    model, vocab = tiny
    clock = MonotonicClock()
    out = MemoryOutput(clock, name="out")
    news = []
    engine = Engine(EngineConfig(external_sync=True, max_bars=3, start_delay_s=0.0, generator=GeneratorConfig(seed=4)),
                    [out], clock, Controls(), on_news=news.append, model=model, vocab=vocab)
    sync = SyncInput(engine.timebase)
    daw = jack_midi("out", "daw")
    ports = daw.get_ports()
    daw.open_port([i for i, p in enumerate(ports) if "moodstream-sync" in p][0])
    ticks_sent = []  # clock time of each pulse the "DAW" sends

    engine.start()
    time.sleep(0.3)
    assert not [m for m in out.messages if m.type == "note_on"]  # nothing plays before Start
    pulse_s = 60.0 / (300.0 * 24)  # the DAW runs at 300 bpm

    def pulses(n):
        for _ in range(n):
            ticks_sent.append(clock.now())  # stamped before sending: a note can never beat its stamp
            daw.send_message([0xF8])
            time.sleep(pulse_s)

    def still_sounding() -> bool:
        sounding = {}
        for m in list(out.messages):
            if m.type in ("note_on", "note_off"):
                sounding[(m.channel, m.note)] = m.type
        return "note_on" in sounding.values()

    daw.send_message([0xFA])  # Start
    pulses(24 * 2)  # two beats
    daw.send_message([0xFC])  # Stop
    # Stop silences everything (the Stop travels JACK → sync input → scheduler: allow for a loaded machine)
    assert wait_until(lambda: not still_sounding())
    time.sleep(0.3)
    during_pause = len(out.messages)
    time.sleep(0.3)
    assert len(out.messages) == during_pause  # and nothing is sent while stopped
    daw.send_message([0xFB])  # Continue
    while not engine.wait(0) and len(ticks_sent) < 24 * 40:  # until three bars have played
        pulses(6)
    assert engine.wait(0)
    assert wait_until(lambda: engine.timebase.ticks_received == len(ticks_sent))  # every pulse arrived
    engine.stop()
    sync.close()
    daw.close_port()
    # no note was sent before the pulses reached its beat (one pulse of estimation allowed)
    for sent_s, msg in out.log:
        if msg.type == "note_on":
            pulses_before = sum(1 for t in ticks_sent if t <= sent_s)
            assert pulses_before >= msg.time * 24 - 1, (msg, pulses_before)
    assert sum(1 for m in out.messages if m.type == "note_on") > 5
    assert [n.bar_number for n in news if isinstance(n, BarStarted)] == [0, 1, 2]
    assert sync.api == "JACK"  # the clock came through the JACK input, not another API's port
