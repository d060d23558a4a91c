"""Faults injected into a running stream: the generator raising mid-bar, the JACK server dying under a live
port and under FluidSynth's jack driver, then coming back. Real engine, real tiny model, real JACK server;
fakes only at the edges (a manual clock, outputs that record what they are sent, a fault in `decode_one`).
Waits are bounded polls for an event, never timed assertions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from manual_clock import ManualClock
from jack_fixture import JackServer, jack_server  # noqa: F401
from test_reliability_signals import Child, note_balance

from streamer.clock import MonotonicClock
from streamer.controls import Controls
from streamer.engine import (BarQueued, BarStarted, Engine, EngineConfig, GeneratorFailed, OutputFailed,
                             OutputRecovered, Underrun, load_model)
from streamer.generator import GeneratorConfig
from streamer.outputs.null import MemoryOutput

WAIT_S = 60.0


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    torch.set_num_threads(1)
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


@pytest.fixture
def realtime_switch_interval():
    """A real-time Engine lowers the interpreter's switch interval for the whole process: put it back."""
    saved = sys.getswitchinterval()
    yield
    sys.setswitchinterval(saved)


def wait_until(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


def sounding_after(log, upto: int) -> set:
    """Keys sounding after the first `upto` messages of a MemoryOutput log."""
    sounding = set()
    for _, msg in log[:upto]:
        if msg.type == "note_on" and msg.velocity:
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_on", "note_off"):
            sounding.discard((msg.channel, msg.note))
    return sounding


# ---- the generator raises mid-bar ---------------------------------------------------------------------
def test_generator_error_mid_bar_silences_at_once_and_music_resumes_from_the_last_good_bar(
        tiny, realtime_switch_interval):
    """On the real-time path with time frozen: a switch makes the generator write bar 2 again, and its first
    decode step raises. At that same instant every sounding note gets its note_off, then CC123 on all
    channels; bar 2 is written again from the end of bar 1 (the last good bar) and plays at its bar line,
    with no silent bar in between."""
    model, vocab = tiny
    clock = ManualClock()
    memory = MemoryOutput(clock, wants_meta=True)
    news = []
    engine = Engine(EngineConfig(lookahead_bars=2, start_delay_s=0.0, switch_margin=0.0,  # switches never skip a bar
                                 generator=GeneratorConfig(seed=7)), [memory],
                    clock, Controls(genre="rock", mood="happy", bpm=120.0), on_news=news.append, model=model,
                    vocab=vocab)
    armed = threading.Event()
    decoder = engine.generator.decoder
    real_decode_one = decoder.decode_one

    def decode_one(token_id, guidance_w=1.0, negative=None):
        if armed.is_set():
            armed.clear()
            raise RuntimeError("injected fault")
        return real_decode_one(token_id, guidance_w, negative)

    decoder.decode_one = decode_one
    started = lambda n: next((x for x in news if isinstance(x, BarStarted) and x.bar_number == n), None)  # noqa: E731
    engine.start()
    try:
        wait_until(lambda: started(0) and len(engine.queue) == 2, "bar 0 to start with two bars queued")
        clock.advance(engine.scheduler.seconds_to_next_bar() + 1e-6)
        bar1 = wait_until(lambda: started(1), "bar 1 to start")
        assert bar1.notes, "bar 1 of this seed has notes"
        held = max(bar1.notes, key=lambda n: n.duration_beats)
        note_on_beat = bar1.start_beat + held.start_beats
        clock.advance((held.start_beats + min(held.duration_beats, bar1.length_beats - held.start_beats) / 2) * 0.5)
        wait_until(lambda: any(m.type == "note_on" and m.time >= note_on_beat for m in memory.messages),
                   "the held note of bar 1 to sound")
        wait_until(lambda: len(engine.queue) == 2, "the generator to fill the lookahead")
        fault_s = clock.now()
        sent_before = len(memory.log)
        assert sounding_after(memory.log, sent_before), "a note sounds when the fault comes"
        armed.set()
        at_bar = engine.set_controls(genre="jazz")  # bars 2 and 3 are thrown away: bar 2 is written again
        assert at_bar == 2
        failure = wait_until(lambda: [x for x in news if isinstance(x, GeneratorFailed)], "the failure news")
        assert failure == [GeneratorFailed("generator error: RuntimeError: injected fault", fatal=False)]
        panic_index = wait_until(
            lambda: next((i for i, (_, m) in enumerate(memory.log) if i >= sent_before and m.type == "control_change"
                          and m.control == 123 and m.channel == 0), None), "the panic")
        log = memory.log
        assert all(sent_s == fault_s for sent_s, _ in log[sent_before:panic_index + 1])  # at once: time stood still
        assert not any(m.type == "note_on" for _, m in log[sent_before:panic_index])
        assert sounding_after(log, panic_index) == set()  # every sounding note got its note_off first
        assert {m.channel for _, m in log[panic_index:] if m.type == "control_change" and m.control == 123} \
            == set(range(16))
        wait_until(lambda: any(isinstance(x, BarQueued) and x.bar.seq == 2 for x in news[news.index(failure[0]):]),
                   "bar 2 to be written again")
        for n in (2, 3, 4):
            wait_until(lambda: len(engine.queue) >= 1, "a bar to be queued")
            clock.advance(engine.scheduler.seconds_to_next_bar() + 1e-6)
            wait_until(lambda: started(n), f"bar {n} to start")
    finally:
        engine.stop()
    bars = [x for x in news if isinstance(x, BarStarted)]
    assert [b.bar_number for b in bars] == [0, 1, 2, 3, 4] and [b.seq for b in bars] == [0, 1, 2, 3, 4]
    assert bars[2].conditions.genre == "jazz" and bars[2].notes  # music resumes at the very next bar line
    assert not [x for x in news if isinstance(x, Underrun)]
    stats = engine.stats().generator
    assert stats.failures == 1 and stats.rollbacks >= 2 and engine.error is None
    assert any(m.type == "note_on" and m.time >= bars[2].start_beat for m in memory.messages)
    assert sounding_after(memory.log, len(memory.log)) == set()


FAULTY_CLI = """
import sys
from model.engine import Decoder
real = Decoder.decode_one
calls = [0]
def decode_one(self, token_id, guidance_w=1.0, negative=None):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        raise RuntimeError("injected fault")
    return real(self, token_id, guidance_w, negative)
Decoder.decode_one = decode_one
from streamer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_generator_error_in_the_cli_is_one_warning_and_the_recording_stays_whole(tiny_model_dir, tmp_path):
    take = tmp_path / "take.mid"
    out = subprocess.run([sys.executable, "-c", FAULTY_CLI, "700", "stream", "--model", str(tiny_model_dir),
                          "--output", "null", "--bars", "6", "--bpm", "300", "--record", str(take)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    warnings = [line for line in out.stderr.splitlines() if "injected fault" in line]
    assert "moodstream: warning: generator error: RuntimeError: injected fault (notes silenced, resuming from " \
           "the last good bar)" in warnings
    assert len(warnings) <= 2  # the warning, and the log record as one line (no traceback)
    count, left = note_balance(take)
    assert count > 0 and not left
    assert f"recorded {take}" in out.stderr


# ---- an output fails ----------------------------------------------------------------------------------
@pytest.mark.jack
def test_jack_server_dies_and_comes_back_port_and_fluidsynth_reconnect(tiny, jack_server, tmp_path,
                                                                        realtime_switch_interval):
    """The server dies under a live port and under FluidSynth's jack driver: each fails with a message
    naming the cause and the fix, the memory output goes on bar after bar; the server comes back: both
    reconnect, a reader on the new port hears notes again, and stop closes everything (no hang)."""
    import rtmidi

    from streamer.outputs.port import PortOutput
    from streamer.outputs.synth import FluidSynthOutput
    from streamer.soundfont import find_soundfont

    model, vocab = tiny
    clock = MonotonicClock()
    port = PortOutput(clock=False, reconnect_interval_s=0.2)
    synth = FluidSynthOutput(find_soundfont(), driver="jack", reconnect_interval_s=0.2)
    survivor = MemoryOutput(clock, name="survivor")
    news = []
    engine = Engine(EngineConfig(start_delay_s=0.1, generator=GeneratorConfig(seed=3)), [port, synth, survivor],
                    clock, Controls(bpm=240.0), on_news=news.append, model=model, vocab=vocab)
    of = lambda kind: [x for x in news if isinstance(x, kind)]  # noqa: E731
    second = None
    reader = None
    engine.start()
    try:
        wait_until(lambda: [b for b in of(BarStarted) if b.bar_number == 1], "bar 1")
        jack_server.stop()
        failed = wait_until(lambda: len(of(OutputFailed)) == 2 and of(OutputFailed), "both outputs to fail")
        messages = {f.name: f.message for f in failed}
        assert "JACK server stopped" in messages["port"] and "restart JACK" in messages["port"]
        assert "JACK server stopped" in messages["fluidsynth"] and "restart JACK" in messages["fluidsynth"]
        assert engine.stats().outputs["port"].startswith("failed")
        failed_at = max(b.bar_number for b in of(BarStarted))
        second = JackServer(jack_server.name, tmp_path / "jackd-again.log")
        second.wait_up()
        recovered = wait_until(lambda: len(of(OutputRecovered)) == 2 and of(OutputRecovered), "both to reconnect")
        assert {r.name for r in recovered} == {"port", "fluidsynth"}
        reader = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="reader", queue_size_limit=1 << 16)
        ports = wait_until(lambda: [i for i, p in enumerate(reader.get_ports()) if "moodstream" in p], "the new port")
        reader.open_port(ports[0])
        def note_heard() -> bool:
            event = reader.get_message()
            return event is not None and event[0][0] & 0xF0 == 0x90 and event[0][2] > 0

        wait_until(note_heard, "a note through the new port")
        assert all(status == "ok" for status in engine.stats().outputs.values()), engine.stats().outputs
    finally:
        engine.stop()  # returns: nothing waits on a dead server
        if reader is not None:
            reader.close_port()
        if second is not None:
            second.stop()
    started = [b.bar_number for b in of(BarStarted)]
    assert started == list(range(len(started))) and started[-1] > failed_at  # the stream never stopped
    for bar in of(BarStarted):
        if bar.notes:
            assert any(m.type == "note_on" and m.time >= bar.start_beat for m in survivor.messages)
    assert not of(GeneratorFailed) and engine.error is None


@pytest.mark.jack
def test_jack_server_death_in_the_cli_is_reported_and_the_stream_goes_on_and_reconnects(tiny_model_dir, jack_server,
                                                                                      tmp_path):
    take = tmp_path / "take.mid"
    child = Child(["-v", "stream", "--model", tiny_model_dir, "--output", "port,null", "--bpm", "240",
                   "--record", take])
    second = None
    try:
        child.wait_for(r"bar 2 · any · any · 240 bpm")
        jack_server.stop()
        child.wait_for(r"moodstream: warning: output port failed: the JACK server stopped, so MIDI port "
                       r"'moodstream' is gone: restart JACK \(the port comes back by itself\)")
        bar = int(child.wait_for(r"bar (\d+) · any · any · 240 bpm(?![\s\S]*output port failed)").group(1))
        child.wait_for(rf"bar {bar + 1} · any")  # the stream goes on without the port
        second = JackServer(jack_server.name, tmp_path / "jackd-again.log")
        second.wait_up()
        back = int(child.wait_for(r"moodstream: output port works again from bar (\d+)").group(1))
        child.wait_for(rf"bar {back + 2} · any")
        child.proc.send_signal(2)
        code, _, err = child.finish()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
        if second is not None:
            second.stop()
    assert code == 0, err
    assert "Traceback" not in err
    count, left = note_balance(take)
    assert count > 0 and not left


# ---- the terminal UI shows both -------------------------------------------------------------------------
def test_play_shows_an_output_failing_and_coming_back(tiny):
    import asyncio

    from streamer.tui import create_app

    model, vocab = tiny
    engine = Engine(EngineConfig(realtime=False), [MemoryOutput()], ManualClock(), Controls(), model=model, vocab=vocab)
    app = create_app(engine, vocab.genres, vocab.moods, Controls(), output_request="port", start_engine=False)

    def notice() -> str:
        return str(app.query_one("#notice").render())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            app.post_news(OutputFailed("port", "the JACK server stopped, so MIDI port 'moodstream' is gone"))
            for _ in range(500):
                await pilot.pause(0.01)
                if "JACK server stopped" in notice():
                    break
            assert "port: the JACK server stopped" in notice() and "the other outputs go on" in notice()
            app.post_news(OutputRecovered("port", 12))
            for _ in range(500):
                await pilot.pause(0.01)
                if "works again" in notice():
                    break
            assert "port works again from bar 12" in notice()
            await pilot.press("q")

    asyncio.run(run())
    engine.stop()
