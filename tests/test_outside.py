"""Control from outside with real parts: OSC over real UDP on loopback (a subscriber gets the feedback, bad
messages get /moodstream/error and never stop the stream, a flood ends on the last switch with every note
closed), `moodstream send`, quantised switches, cue files on the fake clock (exact bars), the event log and
the news fan-out."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manual_clock import ManualClock, wait_until
from one_line import assert_one_line_error

from model.errors import MoodstreamError
from model.vocab import Conditions
from streamer.clock import FakeClock, MonotonicClock
from streamer.controls import Controls, SwitchAt, parse_switch_at
from streamer.cues import CuePlayer, load_cues
from streamer.engine import (ActionTaken, BarStarted, ControlError, ControlsChanged, Engine, EngineConfig,
                             SwitchApplied, SwitchPending)
from streamer.events import open_event_log
from streamer.generator import GeneratorConfig
from streamer.osc import OscServer, build_message, parse_packet, parse_target
from streamer.outputs.null import MemoryOutput
from streamer.remote import Remote

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from streamer.engine import load_model

    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


def manual_engine(tiny, news=None, **config):
    """A real engine on a manual clock whose bar lines wait for their bars (bar numbers = generation order)."""
    model, vocab = tiny
    clock = ManualClock()
    out = MemoryOutput(clock)
    config = {"lookahead_bars": 2, "realtime": False, "start_delay_s": 0.0, "generator": GeneratorConfig(seed=3),
              **config}
    engine = Engine(EngineConfig(**config), [out], clock, Controls(bpm=240.0), on_news=news, model=model,
                    vocab=vocab)
    return engine, clock, out


class Listener:
    """A UDP socket on loopback that collects OSC messages."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[tuple[str, list]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                data, _ = self.sock.recvfrom(65535)
                self.messages.extend(parse_packet(data))

    def of(self, address):
        return [args for a, args in list(self.messages) if a == address]

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


def send(port, address, *args, sock=None):
    owned = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(build_message(address, args), ("127.0.0.1", port))
    if owned:
        sock.close()


def notes_closed(out) -> bool:
    balance = Counter()
    for msg in out.messages:
        if msg.type == "note_on" and msg.velocity:
            balance[(msg.channel, msg.note)] += 1
        elif msg.type in ("note_on", "note_off"):
            balance[(msg.channel, msg.note)] = 0
    return not any(balance.values())


# ---- OSC over real UDP --------------------------------------------------------------------------------------
def test_osc_subscriber_gets_bar_switch_and_error_feedback_and_bad_messages_never_stop_the_stream(tiny):
    news = []
    engine, clock, out = manual_engine(tiny, news=news.append)
    remote = Remote(engine, min_interval_s=0.0).start()
    server = OscServer(remote, engine.news, "127.0.0.1", 0).start()
    listener = Listener()
    try:
        send(server.port, "/moodstream/subscribe", listener.port)
        assert wait_until(lambda: server.subscribers == [("127.0.0.1", listener.port)])
        engine.start()
        assert wait_until(lambda: listener.of("/moodstream/bar"))
        send(server.port, "/moodstream/conditions", "jazz", "calm")
        send(server.port, "/moodstream/genre", "no-such-genre")  # a wrong value
        send(server.port, "/moodstream/temperature", "hot")  # a wrong type
        send(server.port, "/moodstream/nope", 1)  # an unknown address
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"\x00garbage", ("127.0.0.1", server.port))  # not OSC at all
        sock.close()
        assert wait_until(lambda: len(listener.of("/moodstream/error")) >= 4)
        assert wait_until(lambda: engine.controls.conditions == Conditions("jazz", "calm"))
        for _ in range(400):
            if listener.of("/moodstream/switch/applied"):
                break
            clock.advance(0.05)
            time.sleep(0.005)
        pending = listener.of("/moodstream/switch/pending")
        applied = listener.of("/moodstream/switch/applied")
        assert pending and pending[0][:2] == ["jazz", "calm"]
        assert applied == [["jazz", "calm", pending[0][2]]]  # it landed where pending said
        bars = [args[0] for args in listener.of("/moodstream/bar")]
        assert bars == list(range(bars[0], bars[0] + len(bars)))  # one per bar line, in order
        errors = [args[0] for args in listener.of("/moodstream/error")]
        assert any("unknown genre 'no-such-genre'" in e for e in errors)
        assert any("/moodstream/temperature: takes f, got s" in e for e in errors)
        assert any("/moodstream/nope: unknown address" in e for e in errors)
        assert any("malformed OSC packet" in e for e in errors)
        changed = [n for n in news if isinstance(n, ControlsChanged)]
        assert changed and changed[0].source.startswith("osc 127.0.0.1:")
        before = len(listener.of("/moodstream/bar"))
        for _ in range(100):  # the stream goes on after the bad messages
            clock.advance(0.05)
            time.sleep(0.002)
        assert wait_until(lambda: len(listener.of("/moodstream/bar")) > before + 1)
        assert engine.error is None and not engine.scheduler.finished.is_set()
        send(server.port, "/moodstream/stop")
        assert wait_until(lambda: any(isinstance(n, ActionTaken) and n.action == "stop" for n in news))
    finally:
        server.close()
        remote.close()
        engine.stop()
        listener.close()
    assert notes_closed(out)


def test_osc_flood_keeps_the_stream_going_and_the_last_switch_wins(tiny):
    """1,000 messages a second for 2 s at a real-clock stream: the remote merges them into a few engine calls,
    the stream ends under the conditions of the last message, every note is closed."""
    model, vocab = tiny
    clock = MonotonicClock()
    out = MemoryOutput(clock)
    news = []
    engine = Engine(EngineConfig(lookahead_bars=2, start_delay_s=0.05, generator=GeneratorConfig(seed=1)), [out],
                    clock, Controls(bpm=240.0, guidance_w=1.0), on_news=news.append, model=model, vocab=vocab)
    remote = Remote(engine).start()
    server = OscServer(remote, engine.news).start()
    pairs = [("jazz", "calm"), ("rock", "tense"), ("pop", "happy"), ("blues", "sad")]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    try:
        engine.start()
        assert wait_until(lambda: engine.scheduler.started.is_set(), 30)
        start = time.monotonic()
        while time.monotonic() - start < 2.0:
            genre, mood = pairs[sent % len(pairs)]
            send(server.port, "/moodstream/conditions", genre, mood, sock=sock)
            send(server.port, "/moodstream/temperature", 0.5 + (sent % 10) / 20, sock=sock)
            sent += 2
            time.sleep(max(0.0, start + sent / 1000 - time.monotonic()))
        send(server.port, "/moodstream/conditions", "latin", "calm", sock=sock)
        assert wait_until(lambda: server.received == sent + 1, 10)
        assert wait_until(lambda: engine.controls.conditions == Conditions("latin", "calm"), 5)
        assert wait_until(lambda: any(isinstance(n, SwitchApplied) and n.conditions == Conditions("latin", "calm")
                                      for n in news), 30)
        bars_then = engine.stats().scheduler.bars_played
        assert wait_until(lambda: engine.stats().scheduler.bars_played >= bars_then + 2, 30)  # still playing
    finally:
        sock.close()
        server.close()
        remote.close()
        engine.stop()
    assert remote.applied < sent / 10  # merged, not one engine call per message
    last_bars = [n for n in news if isinstance(n, BarStarted)][-2:]
    assert all(b.conditions == Conditions("latin", "calm") for b in last_bars)
    assert engine.error is None and notes_closed(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda address, args: build_message(address, args),
              st.sampled_from(["/moodstream/genre", "/moodstream/mood", "/moodstream/conditions",
                               "/moodstream/temperature", "/moodstream/top_p", "/moodstream/guidance",
                               "/moodstream/tempo", "/moodstream/switch_at", "/moodstream/record",
                               "/moodstream/subscribe", "/moodstream/x", "/other"]),
              st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32),
                                 st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                         max_size=12),
                                 st.booleans()), max_size=3))))
def test_fuzzed_packets_are_accepted_or_refused_in_one_line_never_raised(fuzz_engine, data):
    engine, remote, server, news = fuzz_engine
    refused = remote.refused
    server.handle_packet(data, ("127.0.0.1", 40000))
    if remote.refused > refused:
        error = [n for n in news if isinstance(n, ControlError)][-1]
        assert error.message and "\n" not in error.message
    engine.controls.check(engine.vocab)  # whatever came in, the controls stay valid


@pytest.fixture(scope="module")
def fuzz_engine(tiny):
    news = []
    engine, _, _ = manual_engine(tiny)
    engine.news.subscribe(news.append, ControlError, sync=True)  # on the posting thread: there at once
    remote = Remote(engine, min_interval_s=0.0, record_path=None).start()
    server = OscServer(remote, engine.news)
    yield engine, remote, server, news
    server.close()
    remote.close()
    engine.stop()


def test_osc_targets_and_the_public_warning():
    assert parse_target("9000") == ("127.0.0.1", 9000)
    assert parse_target("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_target("[::1]:9000") == ("::1", 9000)
    for bad in ("", "x", "host:", ":9000", "70000", "1.2.3.4:-1"):
        with pytest.raises(MoodstreamError, match="write \\[HOST:\\]PORT"):
            parse_target(bad)


def test_osc_on_all_interfaces_prints_a_warning(tiny_model_dir, capsys):
    from streamer.commands.outside import open_outside, check_outside
    import argparse

    model = tiny_model_dir
    from streamer.engine import load_model

    m, vocab, _ = load_model(model, "cpu")
    engine = Engine(EngineConfig(realtime=False), [MemoryOutput()], FakeClock(), Controls(), model=m, vocab=vocab)
    args = argparse.Namespace(osc="0.0.0.0:0", switch_at="bar", events=None, cues=None, cues_loop=False)
    lines = []
    outside = open_outside(engine, args, check_outside(args, "any", "any"), lines.append)
    outside.close()
    engine.stop()
    assert any("warning: OSC listens on 0.0.0.0:" in line and "anyone" in line for line in lines)


# ---- moodstream send -----------------------------------------------------------------------------------------
def test_send_delivers_typed_arguments_and_prints_replies(capsys):
    from streamer.cli import main

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def answer():
        data, sender = sock.recvfrom(65535)
        received.extend(parse_packet(data))
        sock.sendto(build_message("/moodstream/bar", [7]), sender)

    received = []
    thread = threading.Thread(target=answer)
    thread.start()
    assert main(["send", str(port), "/moodstream/conditions", "jazz", "3", "0.5", "s:7", "--wait", "2"]) == 0
    thread.join(5)
    sock.close()
    assert received == [("/moodstream/conditions", ["jazz", 3, 0.5, "7"])]
    assert "/moodstream/bar 7" in capsys.readouterr().out
    assert main(["send", "nope", "/x"]) == 1
    assert main(["send", "9000", "moodstream/x"]) == 1
    assert "must start with /" in capsys.readouterr().err


# ---- quantised switches -------------------------------------------------------------------------------------
def test_switch_at_phrase_lands_on_a_multiple_of_n(tiny):
    news = []
    engine, clock, out = manual_engine(tiny, news=news.append, switch_at=SwitchAt(4))
    engine.start()
    try:
        assert wait_until(lambda: engine.stats().scheduler.bars_played >= 1)
        for _ in range(30):
            clock.advance(0.05)
            time.sleep(0.003)
        at = engine.set_controls(genre="rock", mood="sad", source="test")
        assert at % 4 == 0 and at > engine.stats().bar_number
        for _ in range(600):
            if any(isinstance(n, SwitchApplied) for n in news):
                break
            clock.advance(0.05)
            time.sleep(0.003)
    finally:
        engine.stop()
    applied = [n for n in news if isinstance(n, SwitchApplied)]
    assert [(a.bar_number, a.conditions) for a in applied] == [(at, Conditions("rock", "sad"))]
    assert SwitchPending(engine.controls, at, 1) in news


def test_switch_at_parsing():
    assert parse_switch_at("bar") == SwitchAt(1) and parse_switch_at("phrase:8").bars == 8
    assert parse_switch_at(" Beat ") == SwitchAt(beat=True) and SwitchAt(beat=True).name == "beat"
    assert [SwitchAt(1).name, SwitchAt(4).name] == ["bar", "phrase:4"]
    for bad in ("phrase", "phrase:x", "phrase:0", "bars", "beats", "beat:2"):
        with pytest.raises(MoodstreamError) as err:
            parse_switch_at(bad)
        assert "\n" not in str(err.value) and ("use beat, bar or phrase:N" in str(err.value) or bad == "phrase:0")


# ---- cue files on the fake clock ------------------------------------------------------------------------------
CUES = """
length_bars = 6
[[cue]]
bar = 0
genre = "jazz"
mood = "calm"
[[cue]]
bar = 3
genre = "rock"
tempo = 200
"""


def run_cues(tiny, path, bars, loop=False):
    model, vocab = tiny
    news = []
    engine = Engine(EngineConfig(lookahead_bars=2, realtime=False, start_delay_s=0.0, max_bars=bars,
                                 midi_clock=False, generator=GeneratorConfig(seed=4)),
                    [MemoryOutput()], FakeClock(), Controls(bpm=120.0), on_news=news.append, model=model, vocab=vocab)
    player = CuePlayer(engine, load_cues(path), loop=loop, sync=True)
    player.prime()
    engine.start()
    assert engine.wait(120)
    engine.stop()
    return [n for n in news if isinstance(n, BarStarted)]


def test_cues_land_on_exact_bars_and_loop(tiny, tmp_path):
    path = tmp_path / "cues.toml"
    path.write_text(CUES)
    bars = run_cues(tiny, path, 12, loop=True)
    # a cue changes only what it names: the tempo set at bar 3 stays when the sheet starts again at bar 6
    assert [(b.bar_number, b.conditions.genre, b.conditions.mood, b.tempo_qpm) for b in bars] == [
        (n, "jazz" if n % 6 < 3 else "rock", "calm", 120.0 if n < 3 else 200.0) for n in range(12)]
    once = run_cues(tiny, path, 8, loop=False)
    assert [b.conditions.genre for b in once] == ["jazz"] * 3 + ["rock"] * 5


def test_time_cues_land_on_a_bar_line_at_or_after_their_time(tiny, tmp_path):
    path = tmp_path / "cues.toml"
    path.write_text('[[cue]]\ntime_s = 0\nmood = "sad"\n[[cue]]\ntime_s = 17.0\nmood = "happy"\n')
    bars = run_cues(tiny, path, 14)
    starts = {}
    t = 0.0
    for b in bars:  # bar lines in seconds from the bars' own lengths and tempos
        starts[b.bar_number] = t
        t += b.length_beats * 60.0 / b.tempo_qpm
    switched = next(b.bar_number for b in bars if b.conditions.mood == "happy")
    assert bars[0].conditions.mood == "sad"
    # never before its time; late by at most the bars it was reckoned ahead (lookahead + 3: the meter changes)
    assert starts[switched] >= 17.0 - 1e-6
    passed_by = [n for n, start in starts.items() if 17.0 - 1e-6 <= start and n < switched]
    assert len(passed_by) <= 2 + 3
    assert all(b.conditions.mood == "happy" for b in bars if b.bar_number >= switched)


@pytest.mark.parametrize("text, message", [
    ("[[cue]]\nbar = 1\nmoood = 'sad'\n", "cue 1: unknown key 'moood'"),
    ("[[cue]]\nbar = 1\ntime_s = 3\nmood = 'sad'\n", "cue 1: give exactly one of bar and time_s"),
    ("[[cue]]\nbar = -1\nmood = 'sad'\n", "cue 1: bar = -1"),
    ("[[cue]]\nbar = 2\ntemperature = 9\n", "cue 1: temperature = 9 is out of range"),
    ("[[cue]]\nbar = 2\n", "cue 1: it changes nothing"),
    ("length_bars = 2\n[[cue]]\nbar = 2\nmood = 'sad'\n", "past length_bars"),
    ("cue = 3\n", "no cues"),
    ("[[cue]\n", "not valid TOML"),
])
def test_bad_cue_files_are_one_line_naming_the_problem(tmp_path, text, message):
    assert_one_line_error(load_cues, tmp_path / "bad.toml", text, message)


def test_render_with_cues_and_events_is_the_same_every_time_and_bad_flags_exit_1(tiny_model_dir, tmp_path,
                                                                                   capsys):
    from streamer.cli import main

    cues = tmp_path / "cues.toml"
    cues.write_text(CUES)
    outs = []
    for i in range(2):
        out, events = tmp_path / f"take{i}.mid", tmp_path / f"events{i}.jsonl"
        assert main(["render", "--model", str(tiny_model_dir), "--bars", "8", "--seed", "2", "--cues", str(cues),
                     "--events", str(events), "-o", str(out)]) == 0
        outs.append((out.read_bytes(), events.read_text()))
    assert outs[0] == outs[1]
    lines = [json.loads(line) for line in outs[0][1].splitlines()]
    assert [line["bar"] for line in lines if line["event"] == "bar"] == list(range(8))
    assert [(line["bar"], line["genre"]) for line in lines if line["event"] == "switch_applied"] == [(0, "jazz"),
                                                                                                     (3, "rock")]
    assert lines[-1]["event"] == "stopped" and all("t_s" in line for line in lines)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[[cue]]\nbar = 1\ngenre = 'polka'\n")
    capsys.readouterr()
    assert main(["render", "--model", str(tiny_model_dir), "--bars", "4", "--cues", str(unknown),
                 "-o", str(tmp_path / "x.mid")]) == 1
    assert "unknown genre 'polka'" in capsys.readouterr().err
    assert main(["render", "--model", str(tiny_model_dir), "--bars", "4", "--cues-loop",
                 "-o", str(tmp_path / "x.mid")]) == 1
    assert main(["stream", "--model", str(tiny_model_dir), "--output", "null", "--switch-at", "beats"]) == 1
    assert "use beat, bar or phrase:N" in capsys.readouterr().err
    assert main(["stream", "--model", str(tiny_model_dir), "--output", "null", "--osc", "x:y"]) == 1
    assert not (tmp_path / "x.mid").exists()


# ---- the fan-out ----------------------------------------------------------------------------------------------
def test_every_listener_gets_the_news_in_order_and_a_broken_one_harms_none(tiny, tmp_path):
    engine, clock, out = manual_engine(tiny, max_bars=4)
    everything, bars_only = [], []

    def broken(news):
        raise RuntimeError("listener bug")

    engine.news.subscribe(broken)
    engine.news.subscribe(everything.append)
    engine.news.subscribe(bars_only.append, BarStarted)
    events = open_event_log(tmp_path / "e.jsonl", engine)
    engine.set_controls(mood="sad", source="osc 10.0.0.1:9")
    engine.start()
    while not engine.wait(0):
        clock.advance(0.1)
        time.sleep(0.002)
    engine.stop()
    events.close()
    assert [b.bar_number for b in bars_only] == [0, 1, 2, 3]
    assert [n for n in everything if isinstance(n, BarStarted)] == bars_only
    changed = [n for n in everything if isinstance(n, ControlsChanged)]
    assert changed[0].source == "osc 10.0.0.1:9" and "any · sad" in changed[0].describe()
    logged = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [line["bar"] for line in logged if line["event"] == "bar"] == [0, 1, 2, 3]
    assert any(line["event"] == "controls" and line["source"] == "osc 10.0.0.1:9"
               and line["changes"] == {"mood": "sad"} for line in logged)
