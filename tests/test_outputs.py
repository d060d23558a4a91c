"""Outputs: FluidSynth offline render with the real soundfont (sound while notes play, silence after panic),
live FluidSynth driver errors, soundfont lookup, the recorder's .mid, ports without ALSA/JACK, output names."""

from __future__ import annotations

import threading
import wave

import mido
import numpy as np
import pytest

from model.errors import MoodstreamError
from streamer.clock import FakeClock
from streamer.outputs import open_outputs, parse_output_names
from streamer.soundfont import find_soundfont


def read_wav(path):
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    return audio.astype(np.float64), rate


def window(audio, rate, start_s, end_s):
    return audio[int(start_s * rate):int(end_s * rate)]


def test_offline_render_sounds_while_notes_play_and_is_silent_after_panic(tmp_path):
    from streamer.outputs.synth import FluidSynthRender

    clock = FakeClock()
    out = FluidSynthRender(tmp_path / "take.wav", find_soundfont(), clock, tail_s=1.5)
    quiet_start = 0.5  # half a second of silence before the first note
    clock.advance(quiet_start)
    out.send(mido.Message("program_change", channel=0, program=0))  # the first message is time zero
    out.render_until(clock.now() + quiet_start)
    clock.advance(quiet_start)
    for msg in (mido.Message("note_on", channel=0, note=60, velocity=100),
                mido.Message("note_on", channel=0, note=64, velocity=100),
                mido.Message("note_on", channel=9, note=38, velocity=110)):
        out.send(msg)
    clock.advance(1.0)
    out.panic()  # CC123 + CC120 on every channel, 1.5 s into the file
    out.close()
    assert not (tmp_path / ".take.wav.part").exists()
    audio, rate = read_wav(tmp_path / "take.wav")
    assert len(audio) == pytest.approx((0.5 + 1.0 + 1.5) * rate, abs=2)  # up to the last message + the tail
    before = np.abs(window(audio, rate, 0.0, 0.45)).max()
    playing = np.sqrt((window(audio, rate, 0.6, 1.45) ** 2).mean())
    after = np.abs(window(audio, rate, 2.0, 3.0)).max()  # the reverb tail has died out half a second on
    assert before < 16  # (FluidSynth dithers: ±1 LSB)
    assert playing > 300  # clearly audible (RMS of 16-bit samples)
    assert after < 16  # < -66 dBFS: silence


def test_offline_render_through_the_scheduler_matches_its_messages(tmp_path, vocab):
    """The same scheduler and clock as `render`: sound where the bar has notes."""
    from streamer.barqueue import BarQueue
    from streamer.bars import Bar, RemiTable, bar_messages, parse_bar
    from streamer.outputs.synth import FluidSynthRender
    from streamer.scheduler import Scheduler, SchedulerConfig

    ids = [vocab.token_to_id[t] for t in ("Bar_None TimeSig_4/4 Position_0 Program_0 Pitch_60 Velocity_95 "
                                          "Duration_1.0.8").split()]
    messages, _ = bar_messages(parse_bar(RemiTable(vocab), ids))
    queue = BarQueue(2)
    queue.put(Bar(0, messages, tuple(ids)))
    clock = FakeClock()
    out = FluidSynthRender(tmp_path / "bar.wav", find_soundfont(), clock, tail_s=0.5)
    Scheduler(queue, [out], clock, SchedulerConfig(wait_for_bars=True, start_delay_s=0.0, max_bars=1)).run()
    out.close()
    audio, rate = read_wav(tmp_path / "bar.wav")
    assert len(audio) == pytest.approx(2.5 * rate, abs=2)  # a 4/4 bar at 120 bpm, then the tail
    note = np.sqrt((window(audio, rate, 0.05, 0.45) ** 2).mean())
    rest = np.abs(window(audio, rate, 1.5, 2.5)).max()
    assert note > 300 and rest < 16


def test_live_fluidsynth_opens_a_driver_or_names_every_one_it_tried():
    from streamer.outputs.synth import AUTO_DRIVERS, FluidSynthOutput

    soundfont = find_soundfont()
    with pytest.raises(MoodstreamError) as err:
        FluidSynthOutput(soundfont, driver="no-such-driver")
    assert "no-such-driver" in str(err.value) and "\n" not in str(err.value)
    try:
        out = FluidSynthOutput(soundfont)  # auto
    except MoodstreamError as auto_err:  # machines without a sound device (like CI)
        text = str(auto_err)
        assert all(name in text for name in AUTO_DRIVERS) and "--output" in text and "\n" not in text
    else:
        assert out.driver in AUTO_DRIVERS
        out.send(mido.Message("note_on", note=60, velocity=64))
        out.panic()
        out.close()


def test_soundfont_lookup_order(tmp_path):
    repo = tmp_path / "soundfonts"
    system = (tmp_path / "FluidR3_GM.sf2", tmp_path / "TimGM6mb.sf2")
    with pytest.raises(MoodstreamError) as err:
        find_soundfont(repo_dir=repo, system=system)
    assert "fluid-soundfont-gm" in str(err.value) and "--soundfont" in str(err.value)
    system[1].write_bytes(b"RIFF")
    assert find_soundfont(repo_dir=repo, system=system) == system[1]
    system[0].write_bytes(b"RIFF")
    assert find_soundfont(repo_dir=repo, system=system) == system[0]
    repo.mkdir()
    (repo / "mine.sf2").write_bytes(b"RIFF")
    assert find_soundfont(repo_dir=repo, system=system) == repo / "mine.sf2"
    assert find_soundfont(system[1], repo_dir=repo, system=system) == system[1]
    with pytest.raises(MoodstreamError, match="soundfont .*missing.sf2 not found"):
        find_soundfont(tmp_path / "missing.sf2")


def test_a_bad_soundfont_is_one_line(tmp_path):
    from streamer.outputs.synth import FluidSynthRender

    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"not a soundfont")
    with pytest.raises(MoodstreamError) as err:
        FluidSynthRender(tmp_path / "x.wav", bad, FakeClock())
    assert "bad.sf2 could not be loaded" in str(err.value) and "\n" not in str(err.value)


def test_recorder_writes_what_was_sent_at_its_beats(tmp_path):
    from streamer.outputs.recorder import Recorder

    path = tmp_path / "take.mid"
    rec = Recorder(path)
    rec.joined(4.0)  # at the bar line of beat 4
    sent = [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90), time=4.0),
            mido.Message("program_change", channel=0, program=33, time=4.0),
            mido.Message("note_on", channel=0, note=40, velocity=80, time=4.0),
            mido.Message("note_off", channel=0, note=40, time=5.5),
            mido.Message("note_on", channel=9, note=36, velocity=100, time=6.25),
            mido.Message("note_off", channel=9, note=36, time=6.5)]
    for msg in sent:
        rec.send(msg)
    assert not path.exists()  # written at close
    rec.close()
    midi = mido.MidiFile(str(path))
    ticks, timeline = 0, []
    for msg in midi.tracks[0]:
        ticks += msg.time
        if not msg.is_meta or msg.type == "set_tempo":
            timeline.append((ticks / midi.ticks_per_beat, msg.type))
    assert timeline == [(0.0, "set_tempo"), (0.0, "program_change"), (0.0, "note_on"), (1.5, "note_off"),
                        (2.25, "note_on"), (2.5, "note_off")]
    assert midi.tracks[0][0].tempo == mido.bpm2tempo(90)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_recorder_refuses_unwritable_paths(tmp_path):
    from streamer.outputs.recorder import Recorder

    with pytest.raises(MoodstreamError, match="does not exist"):
        Recorder(tmp_path / "missing" / "x.mid")
    with pytest.raises(MoodstreamError, match="is a directory"):
        Recorder(tmp_path)


def test_port_without_alsa_or_jack_lists_what_was_tried(monkeypatch):
    import os

    from streamer.outputs.port import PortOutput

    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer: a virtual port opens")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"moodstream-none-{os.getpid()}")  # no server by that name
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MoodstreamError) as err:
        PortOutput()
    text = str(err.value)
    assert "ALSA" in text and "JACK" in text and "\n" not in text


def test_output_names():
    assert parse_output_names("fluidsynth,port") == ("fluidsynth", "port")
    assert parse_output_names("null") == ("null",)
    assert parse_output_names("none") == ()
    with pytest.raises(MoodstreamError, match="unknown output 'speakers': use one or more of fluidsynth, port, null"):
        parse_output_names("speakers")
    outputs, problems = open_outputs(["null"])
    assert [o.name for o in outputs] == ["null"] and problems == []


def test_memory_output_is_thread_safe():
    from streamer.outputs.null import MemoryOutput

    out = MemoryOutput(FakeClock())
    threads = [threading.Thread(target=lambda: [out.send(mido.Message("clock")) for _ in range(500)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out.log) == 2000 and out.sent == 2000
