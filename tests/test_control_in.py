"""MIDI control input with real parts: a real JACK server (the fixture), the real `moodstream-control` input
and a second rtmidi client that plays the controller. Program changes, CCs and notes change the engine's
controls through the Remote (source "midi PORT", last change wins), panic and record act, unbound messages
and other channels are ignored; a named port is joined; bad maps are one line naming the key, exit 1."""

from __future__ import annotations

import argparse

import pytest
from jack_fixture import jack_server  # noqa: F401
from manual_clock import ManualClock, wait_until
from one_line import assert_one_line_error

from model.errors import MoodstreamError
from streamer.control_map import DEFAULT_MAP, load_control_map
from streamer.controls import Controls
from streamer.engine import ActionTaken, ControlsChanged, Engine, EngineConfig, load_model
from streamer.generator import GeneratorConfig
from streamer.outputs.null import MemoryOutput

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOURCE = "midi moodstream-control"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


def manual_engine(tiny, news):
    """A real engine on a clock that moves only when told (here: never; controls change without playing)."""
    model, vocab = tiny
    clock = ManualClock()
    engine = Engine(EngineConfig(lookahead_bars=1, realtime=False, start_delay_s=0.0,
                                 generator=GeneratorConfig(seed=3)),
                    [MemoryOutput(clock)], clock, Controls(), on_news=news.append, model=model, vocab=vocab)
    return engine


def outside_args(**changes) -> argparse.Namespace:
    args = dict(osc=None, control_in="", control_map=None, switch_at="bar", events=None, cues=None, cues_loop=False)
    return argparse.Namespace(**{**args, **changes})


class Controller:
    """A second JACK client playing a MIDI controller: connected to the port named `port`, or (port None) with a
    virtual output `virtual` of its own that moodstream connects to."""

    def __init__(self, port: str | None = None, virtual: str | None = None):
        import rtmidi

        self.midi = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="controller")
        if virtual is not None:
            self.midi.open_virtual_port(virtual)
        else:
            ports = self.midi.get_ports()
            matches = [i for i, p in enumerate(ports) if port in p]
            assert matches, f"no port {port!r} among {ports}"
            self.midi.open_port(matches[0])

    def send(self, *messages) -> None:
        for message in messages:
            self.midi.send_message(list(message))

    def close(self) -> None:
        self.midi.close_port()
        self.midi.delete()


# ---- a real controller into the real input --------------------------------------------------------------
@pytest.mark.jack
def test_controller_messages_change_the_engine_through_the_remote_and_the_last_change_wins(jack_server, tiny,
                                                                                            tmp_path):
    from streamer.commands.outside import check_outside, open_outside

    news = []
    engine = manual_engine(tiny, news)
    args = outside_args()
    said = []
    take = tmp_path / "take.mid"
    outside = open_outside(engine, args, check_outside(args, "any", "any"), said.append, record_path=lambda: take)
    control_in = outside.control_in
    controller = None
    try:
        assert (control_in.api, control_in.port_name) == ("JACK", "moodstream-control")
        assert said == ["moodstream: MIDI control in on 'moodstream-control' (JACK)"]
        engine.start()
        controller = Controller("moodstream-control")
        sweep = [(0xB0, 1, value) for value in range(0, 128, 8)] + [(0xB0, 1, 64)]  # a knob turned, then left
        controller.send(
            (0xC0, 3),  # program 3 → jazz
            (0x90, 39, 100), (0x80, 39, 0),  # note 39 → calm (the note-off does nothing)
            *sweep,  # cc 1 → temperature, ends at 64/127 of 0-2
            (0xB0, 74, 0),  # top_p 0.5
            (0xB1, 71, 127),  # guidance 5 (the default map listens on every channel)
            (0xB0, 20, 127),  # tempo 180
            (0xB0, 10, 50), (0xE0, 0, 64), (0x90, 90, 100),  # unbound: a cc, pitch bend, a note
        )
        sent = 3 + len(sweep) + 3 + 3
        assert wait_until(lambda: control_in.received == sent)
        assert control_in.commands == sent - 4  # the note-off and the three unbound messages did nothing
        expected = Controls(genre="jazz", mood="calm", temperature=round(2 * 64 / 127, 3), top_p=0.5, guidance_w=5.0,
                            bpm=180.0)
        assert wait_until(lambda: engine.controls == expected)
        assert wait_until(lambda: any(isinstance(n, ControlsChanged) and n.controls == expected for n in news))
        changed = [n for n in news if isinstance(n, ControlsChanged)]
        assert {n.source for n in changed} == {SOURCE}
        assert "jazz · calm" in " ".join(n.describe() for n in changed)

        controller.send((0x90, 43, 127))  # note 43: panic
        assert wait_until(lambda: ActionTaken("panic", SOURCE) in news)
        controller.send((0x90, 42, 127))  # note 42: record (toggles on)
        assert wait_until(lambda: ActionTaken("record", SOURCE, str(take)) in news)
        assert wait_until(lambda: any(o.name == "recorder" for o in engine.outputs))  # joins on its thread
        commands = control_in.commands
        controller.send((0xB0, 103, 127), (0xB0, 103, 127))  # cc 103 pressed (held: one press): toggles off
        assert wait_until(lambda: control_in.received == sent + 4)
        assert control_in.commands == commands + 1
        assert wait_until(lambda: ActionTaken("record", SOURCE, "") in news)
        assert take.exists()  # stopping wrote it
        controller.send((0x90, 41, 100))  # note 41: the tempo back to the model's
        assert wait_until(lambda: engine.controls.bpm is None)
        assert [n for n in news if isinstance(n, ActionTaken) and n.action == "record"] == [
            ActionTaken("record", SOURCE, str(take)), ActionTaken("record", SOURCE, "")]
    finally:
        if controller is not None:
            controller.close()
        outside.close()
        engine.stop()
        outside.close_events()
    assert engine.error is None


@pytest.mark.jack
def test_a_named_port_is_joined_and_a_map_on_one_channel_ignores_the_others(jack_server, tiny, tmp_path):
    from streamer.midi_control import ControlInput
    from streamer.remote import Remote

    path = tmp_path / "keys.toml"
    path.write_text('channel = 2\n[program]\n5 = { genre = "blues", mood = "sad" }\n[cc]\n7 = "temperature"\n')
    news = []
    engine = manual_engine(tiny, news)
    remote = Remote(engine, min_interval_s=0.0).start()
    controller = Controller(virtual="nanoKEY")
    control_in = None
    try:
        with pytest.raises(MoodstreamError, match="no port named 'no-such-port'") as caught:
            ControlInput(remote, load_control_map(path), port="no-such-port")
        assert "\n" not in str(caught.value)
        control_in = ControlInput(remote, load_control_map(path), port="nanokey").start()  # any case, a part
        assert control_in.port_name == "controller:nanoKEY"
        engine.start()
        controller.send((0xC0, 5), (0xB0, 7, 0),  # channel 1: not ours
                        (0xC1, 5), (0xB1, 7, 127))  # channel 2
        assert wait_until(lambda: control_in.received == 4)
        assert control_in.commands == 2
        assert wait_until(lambda: (engine.controls.genre, engine.controls.mood, engine.controls.temperature)
                          == ("blues", "sad", 2.0))
        assert wait_until(lambda: any(isinstance(n, ControlsChanged) for n in news))
        assert {n.source for n in news if isinstance(n, ControlsChanged)} == {"midi controller:nanoKEY"}
    finally:
        if control_in is not None:
            control_in.close()
        controller.close()
        remote.close()
        engine.stop()


@pytest.mark.jack
def test_stream_with_a_missing_control_port_is_one_line_exit_1(jack_server, tiny_model_dir, capsys):
    from streamer.cli import main

    assert main(["stream", "--model", str(tiny_model_dir), "--output", "null", "--control-in", "no-such-port",
                 "--bars", "1"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("moodstream: error:")]
    assert len(errors) == 1 and "cannot open MIDI port 'no-such-port'" in errors[0]


# ---- maps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ('[cc]\n74 = "cutoff"\n', "cc.74: unknown control 'cutoff'"),
    ('[cc]\n200 = "temperature"\n', "cc.200: cc number '200' is out of range: use 0-127"),
    ('[program]\nx = { genre = "jazz" }\n', "program.x: program number 'x' is out of range"),
    ('[cc]\n1 = { control = "temperature", max = 5 }\n', "cc.1: max = 5 is out of range for temperature: use 0-2"),
    ('[cc]\n1 = { control = "top_p", min = 0 }\n', "cc.1: min = 0 is out of range for top_p"),
    ('[cc]\n1 = { control = "tempo", value = 90 }\n', "cc.1: a cc spans min..max"),
    ('[cc]\n7 = { genre = "jazz" }\n', "cc.7: a genre/mood switch comes from a program change or a note"),
    ('[note]\n36 = "tempo"\n', "note.36: a note sets tempo to one value"),
    ('[note]\n41 = { control = "tempo", value = 500 }\n', "note.41: value = 500 is out of range for tempo"),
    ('[note]\n36 = { mood = "sad", bpm = 3 }\n', "note.36: unknown key 'bpm'"),
    ('[note]\n43 = { control = "panic", value = 1 }\n', "note.43: panic takes no min, max or value"),
    ('[note]\n36 = 5\n', "note.36: 5: write a control name"),
    ('channel = 17\n[cc]\n1 = "temperature"\n', "channel: 17 is out of range: use 1-16"),
    ('knobs = 1\n', "knobs: unknown key"),
    ('channel = "any"\n', "the map binds nothing"),
    ('[cc\n', "not valid TOML"),
])
def test_bad_maps_are_one_line_naming_the_key(tmp_path, text, message):
    assert_one_line_error(load_control_map, tmp_path / "bad.toml", text, message)


def test_the_default_map_binds_every_control_and_names_only_the_models_genres_and_moods():
    from model.paths import TOKENIZER_FILE, resolve_model_dir
    from model.vocab import read_condition_names

    control_map = load_control_map()
    genres, moods = read_condition_names(resolve_model_dir(None) / TOKENIZER_FILE)
    control_map.check_names(genres, moods)
    named_genres, named_moods = control_map.names()
    assert {g for _, g in named_genres} == set(genres) and {m for _, m in named_moods} == set(moods)
    bound = " ".join(control_map.describe())
    for control in ("temperature", "top_p", "guidance", "tempo", "panic", "record"):
        assert control in bound


def test_controls_prints_the_default_map_and_checks_a_file(tmp_path, capsys):
    from streamer.cli import main

    assert main(["controls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"control map {DEFAULT_MAP}"
    assert "program 3    genre jazz" in out and "cc 1         temperature 0-2" in out
    assert "note 43      panic" in out and "note 42      record (toggle)" in out
    assert main(["controls", "--toml"]) == 0
    assert capsys.readouterr().out == DEFAULT_MAP.read_text()
    own = tmp_path / "own.toml"
    own.write_text('[note]\n60 = { genre = "rock", mood = "tense" }\n')
    assert main(["controls", "--control-map", str(own)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "note 60      genre rock, mood tense"
    polka = tmp_path / "polka.toml"
    polka.write_text('[program]\n5 = { genre = "polka" }\n')
    assert main(["controls", "--control-map", str(polka)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "program.5: unknown genre 'polka'" in err


def test_stream_refuses_bad_control_flags_before_opening_anything(tiny_model_dir, tmp_path, capsys):
    from streamer.cli import main

    polka = tmp_path / "polka.toml"
    polka.write_text('[program]\n5 = { genre = "polka" }\n')
    record = tmp_path / "take.mid"
    base = ["stream", "--model", str(tiny_model_dir), "--output", "null", "--record", str(record)]
    assert main(base + ["--control-map", str(DEFAULT_MAP)]) == 1
    assert "--control-map goes with --control-in" in capsys.readouterr().err
    assert main(base + ["--control-in", "--control-map", str(polka)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "program.5: unknown genre 'polka'" in err
    assert main(["play", "--model", str(tiny_model_dir), "--control-in", "--control-map", str(tmp_path / "no.toml"),
                 "--log", str(tmp_path / "play.log")]) == 1
    assert "--control-map" in capsys.readouterr().err
    assert not record.exists()
