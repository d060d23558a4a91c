"""The terminal instrument under Textual's Pilot, driving the real engine with the tiny real model.

Fakes only at the edges: a manual clock (time moves when the test says so, so a switch can be watched
while it is pending) and outputs that record what they are sent. Waits are bounded polls for an event,
never timed assertions.
"""

from __future__ import annotations

import asyncio
import csv
import functools

import mido
import pytest
from manual_clock import ManualClock

from model.vocab import Conditions
from streamer.bars import Bar, BarState, RemiTable, bar_messages, parse_bar
from streamer.commands.play import open_play_outputs
from streamer.controls import Controls
from streamer.engine import BarNotes, BarQueued, BarStarted, Engine, EngineConfig
from streamer.generator import GeneratorConfig
from streamer.outputs import OutputOptions
from streamer.outputs.null import MemoryOutput
from streamer.outputs.recorder import Recorder
from streamer.tui import create_app
from streamer.tui.app import GENRE_LABELS, HELP, KNOBS, MOOD_KEYS, STATS_INTERVAL_S, HelpScreen
from streamer.tui.messages import News

SIZE = (120, 40)
WAIT_S = 60.0  # upper bound for an event to happen (a stalled engine fails the test instead of hanging)


def pilot_test(fn):
    """Run an async test function to completion (no async plugin needed)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))
    return run


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from streamer.engine import load_model

    torch.set_num_threads(1)
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


def build(tiny, controls=Controls(genre="jazz", mood="calm"), outputs=None, output_options=OutputOptions(),
          **app_kwargs):
    """(app, engine, clock, memory output): a real engine on a manual clock, wired to the app as in `play`.
    Not real-time: each bar line waits for its bar, so no underrun shifts the bar numbers."""
    model, vocab = tiny
    clock = ManualClock()
    memory = MemoryOutput(clock, wants_clock=True)
    holder = []
    engine = Engine(EngineConfig(lookahead_bars=2, realtime=False, start_delay_s=0.0,
                                 generator=GeneratorConfig(seed=5)),
                    [memory, *(outputs or [])], clock, controls,
                    on_news=lambda news: holder and holder[0].post_news(news), model=model, vocab=vocab,
                    output_options=output_options)
    app_kwargs.setdefault("output_request", "null")
    app = create_app(engine, vocab.genres, vocab.moods, controls, seed=5, **app_kwargs)
    holder.append(app)
    return app, engine, clock, memory


def text_of(app, selector: str) -> str:
    """What the screen shows inside the widget `selector`, as plain lines."""
    region = app.query_one(selector).region
    lines = [strip.text for strip in app.screen._compositor.render_strips()]
    return "\n".join(line[region.x:region.right] for line in lines[region.y:region.bottom])


async def wait_for(pilot, predicate, what: str) -> None:
    for _ in range(int(WAIT_S / 0.02)):
        await pilot.pause(0.02)
        if predicate():
            return
    pytest.fail(f"timed out waiting for {what}")


def playing_bar(app) -> int:
    roll = app.query_one("#roll")
    return -1 if roll.playing is None else roll.playing.index


async def next_bar(pilot, app, engine, clock) -> int:
    """Wait for the lookahead to fill, move the clock to the next bar line, wait for that bar on screen."""
    before = playing_bar(app)
    await wait_for(pilot, lambda: len(engine.queue) >= 1, "a bar to be queued")
    for _ in range(20):
        # a bar that starts playing before it is written may gain a tempo change after this reading: its
        # end moves, so move the clock again until the next bar starts
        clock.advance(max(engine.scheduler.seconds_to_next_bar(), 0.0) + 1e-6)
        for _ in range(25):
            await pilot.pause(0.02)
            if playing_bar(app) > before:
                return playing_bar(app)
    pytest.fail(f"timed out waiting for bar {before + 1} to start")


async def first_bar(pilot, app) -> None:
    await wait_for(pilot, lambda: playing_bar(app) == 0, "the first bar")


@pilot_test
async def test_keys_change_the_pending_controls_and_the_engine_gets_each_snapshot(tiny):
    app, engine, clock, _ = build(tiny)
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        await pilot.press("T", "T", "p", "W", "w", "w")
        assert app.controls.temperature == pytest.approx(1.10)
        assert app.controls.top_p == pytest.approx(0.90)
        guidance = Controls().guidance_w - 0.25  # W up once, w down twice, in 0.25 steps
        assert app.controls.guidance_w == pytest.approx(guidance)
        assert engine.controls == app.controls  # the same snapshot went to the engine
        panel = text_of(app, "#controls")
        assert "1.10" in panel and "0.90" in panel and f"{guidance:.2f}" in panel and "seed" in panel and "5" in panel

        model_bpm = app.model_bpm
        assert model_bpm is not None and "model" in panel
        await pilot.press("b")
        assert app.controls.bpm == pytest.approx(model_bpm - 5) and engine.controls.bpm == app.controls.bpm
        assert f"{model_bpm - 5:.0f} bpm" in text_of(app, "#controls")
        await pilot.press("m")
        assert app.controls.bpm is None and engine.controls.bpm is None

        for _ in range(60):  # clamped at the top of the range, never an error
            await pilot.press("T")
        assert app.controls.temperature == pytest.approx(2.0)
        await pilot.press("s", "grave_accent")  # mood 'happy', genre 'any', from the keys shown on screen
        assert (app.controls.genre, app.controls.mood) == ("any", "happy")
        assert engine.controls.conditions == Conditions("any", "happy")
        await pilot.press("equals_sign")  # the twelfth genre has a key too
        assert app.controls.genre == app.genres[12] and "= " in text_of(app, "#genres")
        landings = []
        for _ in range(5):  # z cycles where switches land: beat → bar → phrase:2 → phrase:4 → phrase:8
            await pilot.press("z")
            landings.append(engine.switch_at.name)
        assert landings == ["phrase:2", "phrase:4", "phrase:8", "beat", "bar"]
        await pilot.press("q")


@pilot_test
async def test_a_switch_shows_as_pending_until_its_bar_starts_then_as_current(tiny):
    app, engine, clock, _ = build(tiny)
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        await next_bar(pilot, app, engine, clock)
        assert text_of(app, "#banner").strip("│╭╮╰╯─ \n") == "jazz · calm"
        rock = GENRE_LABELS[app.genres.index("rock")]
        await pilot.press(rock)
        at_bar = engine.last_switch.at_bar
        assert at_bar > playing_bar(app) and app.switch_at_bar == at_bar
        banner = text_of(app, "#banner")
        assert f"jazz · calm → rock · calm at bar {at_bar}" in banner
        genres = text_of(app, "#genres")
        assert "→ rock" in genres and "● jazz" in genres
        moods = text_of(app, "#moods")
        assert "● calm" in moods and "→" not in moods  # the mood stays

        while playing_bar(app) < at_bar:
            assert "→ rock · calm" in text_of(app, "#banner")  # still pending while older bars play
            bar = await next_bar(pilot, app, engine, clock)
        assert bar == at_bar
        await wait_for(pilot, lambda: "→" not in text_of(app, "#banner"), "the switch to show as applied")
        assert "rock · calm" in text_of(app, "#banner") and app.switch_at_bar is None
        genres = text_of(app, "#genres")
        assert "● rock" in genres and "→" not in genres and "● jazz" not in genres
        await pilot.press("q")


def real_bar(vocab, shared_data):
    """A bar of a real multi-instrument file with drums, as the scheduler would announce it."""
    with open(shared_data / "manifest.csv") as f:
        paths = sorted(row["path"] for row in csv.DictReader(f) if row["path"].startswith("multitrack/"))
    table = RemiTable(vocab)
    for path in paths:
        state = BarState()
        for ids in vocab.split_bars(vocab.encode(shared_data / path))[:16]:
            messages, state = bar_messages(parse_bar(table, ids), state)
            programs = {n.program for n in messages.notes}
            if -1 in programs and len(programs) >= 3:
                return messages
    pytest.fail("no multitrack bar with drums and 3 instruments in the data")


@pilot_test
async def test_posted_bars_update_the_piano_roll(tiny, shared_data):
    app, engine, _, _ = build(tiny, start_engine=False)
    _, vocab = tiny
    messages = real_bar(vocab, shared_data)
    async with app.run_test(size=SIZE) as pilot:
        assert "waiting for the first bar" in text_of(app, "#roll")
        queued = Bar(seq=12, messages=messages, conditions=Conditions("jazz", "calm"))
        app.post_message(News(BarQueued(queued, 1)))
        await pilot.pause()
        assert [b.index for b in app.query_one("#roll").queued] == [12] and "1 queued" in text_of(app, "#roll")

        app.post_message(News(BarStarted(bar_number=41, seq=12, start_beat=164.0, length_beats=messages.length_beats,
                                         tempo_qpm=messages.tempo_qpm, conditions=Conditions("jazz", "calm"),
                                         switch_id=0, notes=messages.notes)))
        await pilot.pause()
        roll = app.query_one("#roll")
        assert roll.playing.index == 41 and roll.playing.notes == messages.notes and roll.queued == ()
        shown = text_of(app, "#roll")
        assert "bar 41 · beat 1/" in shown and "0 queued" in shown
        assert "drm" in shown and "drums" in shown  # the drum row and the legend
        from streamer.tui.roll import family

        for name in {family(n) for n in messages.notes}:
            assert name in shown  # every instrument family of the bar is named in its colour
        assert shown.count("█") >= len({(n.pitch, n.start_beats) for n in messages.notes if n.program >= 0}) // 4

        # a bar that starts while it is still written: the roll shows its first notes, then all of them
        first = tuple(n for n in messages.notes if n.start_beats == 0.0)
        app.post_message(News(BarStarted(42, 13, 164.0 + messages.length_beats, messages.length_beats,
                                         messages.tempo_qpm, Conditions("jazz", "calm"), 0, notes=first)))
        app.post_message(News(BarQueued(Bar(seq=13, messages=messages), 0, playing=True)))
        await pilot.pause()
        roll = app.query_one("#roll")
        assert roll.playing.notes == first and roll.queued == ()  # not listed as queued
        app.post_message(News(BarNotes(42, 13, messages.notes)))
        await pilot.pause()
        assert app.query_one("#roll").playing.notes == messages.notes


@pilot_test
async def test_an_injected_generator_error_shows_its_message_and_the_stream_goes_on(tiny):
    app, engine, clock, _ = build(tiny)
    decoder = engine.generator.decoder
    real_decode_one = decoder.decode_one
    failures = []

    def failing_once(*args, **kwargs):
        # The fault comes while bar 1 is written: the clock stands still until the test moves it, so bar 1
        # is written (and this called) whatever the machine's load, with bar 0 already good.
        if not failures and engine.generator.stats().bars >= 1:
            failures.append(1)
            raise RuntimeError("injected fault in decode_one")
        return real_decode_one(*args, **kwargs)

    decoder.decode_one = failing_once
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        await wait_for(pilot, lambda: "injected fault" in text_of(app, "#notice"), "the error on screen")
        notice = text_of(app, "#notice")
        assert "RuntimeError" in notice and "resuming from the last good bar" in notice
        assert app.query_one("#notice").has_class("-error")
        bar = playing_bar(app)
        for _ in range(3):  # the stream goes on
            assert await next_bar(pilot, app, engine, clock) == bar + 1
            bar += 1
        await pilot.press("q")
    assert engine.generator.stats().failures == 1


@pilot_test
async def test_quit_stops_everything_silences_and_writes_the_recording(tiny, tmp_path):
    take = tmp_path / "take.mid"
    app, engine, clock, memory = build(tiny, outputs=[Recorder(take)], record_path=take)
    assert app.recording
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        assert "● take.mid" in text_of(app, "#outputs")
        for _ in range(2):
            await next_bar(pilot, app, engine, clock)
        clock.advance(0.3)  # into the bar: some notes sound
        await pilot.press("q")
    assert app.stopped and app.stop_error is None and app.crash is None
    assert engine.scheduler.finished.is_set() and not engine.generator._thread.is_alive()
    assert memory.closed and all(o.closed for o in engine.outputs)
    sounding = set()
    for msg in memory.messages:
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_off", "note_on"):
            sounding.discard((msg.channel, msg.note))
    assert not sounding  # every note got its note_off
    tail = [m for m in memory.messages if m.type == "control_change"][-32:]
    assert {(m.control, m.channel) for m in tail} == {(c, ch) for c in (120, 123) for ch in range(16)}
    assert app.recordings == [take]
    midi = mido.MidiFile(take)
    notes_on = sum(1 for m in midi if m.type == "note_on" and m.velocity > 0)
    notes_off = sum(1 for m in midi if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0))
    assert notes_on == notes_off


@pilot_test
async def test_record_toggle_writes_a_file_and_shows_its_name(tiny, tmp_path):
    path = tmp_path / "live.mid"
    app, engine, clock, _ = build(tiny, record_path=path)
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        assert not app.recording and "off" in text_of(app, "#outputs")
        await pilot.press("r")
        assert app.recording and "● live.mid" in text_of(app, "#outputs")
        await next_bar(pilot, app, engine, clock)
        await next_bar(pilot, app, engine, clock)
        await pilot.press("r")
        assert not app.recording and path.is_file() and app.recordings == [path]
        assert "recorded" in text_of(app, "#notice")
        assert mido.MidiFile(path).length > 0
        await pilot.press("r")  # a second take goes to a new file beside the first
        assert app.recording and app.record_path != path and app.record_path.parent == tmp_path
        await pilot.press("q")
    assert app.recordings[1].is_file()


@pilot_test
async def test_output_switching_to_none_then_to_an_output_that_fails_goes_on_to_null(tiny):
    missing = OutputOptions(soundfont="/nonexistent/gm.sf2")  # FluidSynth cannot open on any machine
    app, engine, clock, memory = build(tiny, output_options=missing, output_request="fluidsynth,port")
    async with app.run_test(size=SIZE) as pilot:
        await first_bar(pilot, app)
        await pilot.press("o")  # both → none
        await wait_for(pilot, lambda: "playing to none" in text_of(app, "#notice"), "the switch to none")
        assert engine.outputs == [] and memory.closed and "none" in text_of(app, "#outputs")
        await next_bar(pilot, app, engine, clock)  # the stream goes on with nowhere to play
        await pilot.press("o")  # none → fluidsynth, which cannot open
        await wait_for(pilot, lambda: "streaming to null" in text_of(app, "#notice"), "the fallback to null")
        assert "gm.sf2" in text_of(app, "#notice") and app.query_one("#notice").has_class("-error")
        assert [o.name for o in engine.outputs] == ["null"]
        await next_bar(pilot, app, engine, clock)
        await wait_for(pilot, lambda: "null" in text_of(app, "#stats"), "the null output in the stats")
        assert "priority none" in " ".join(text_of(app, "#stats").split())  # a manual clock: no priority asked
        await pilot.press("q")


@pilot_test
async def test_help_lists_every_key_and_closes(tiny):
    app, _, _, _ = build(tiny, start_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        app.post_message(News(BarStarted(3, 3, 12.0, 4.0, 120.0, Conditions("rock", "sad"), 1, notes=())))
        await pilot.pause(2.5 * STATS_INTERVAL_S)  # news and stats keep coming while the help is up
        assert isinstance(app.screen, HelpScreen) and app.crash is None
        shown = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
        for keys, _ in HELP:
            assert keys in shown
        for knob in KNOBS:
            assert f"{knob.down} / {knob.up}" in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert "rock · sad" in text_of(app, "#banner") and "bar 3 · beat" in text_of(app, "#roll")
        assert all(key in text_of(app, "#moods") for key in MOOD_KEYS[:len(app.moods)])


@pilot_test
async def test_mouse_and_arrows_pick_too(tiny):
    app, engine, _, _ = build(tiny, start_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        moods = app.query_one("#moods")
        moods.focus()
        await pilot.press("home", "down", "down", "enter")  # any → happy → tense
        assert app.controls.mood == "tense" and engine.controls.mood == "tense"
        genres = app.query_one("#genres")
        row = app.genres.index("blues")
        await pilot.click("#genres", offset=(3, 1 + row))  # inside the border, on the row of 'blues'
        assert app.controls.genre == "blues" and engine.controls.genre == "blues"
        assert "→ blues" in text_of(app, "#genres") and genres is not None


@pilot_test
async def test_startup_problems_show_and_a_ui_error_stops_the_music_without_a_traceback(tiny):
    outputs, problems = open_play_outputs(("fluidsynth",), OutputOptions(soundfont="/nonexistent/gm.sf2"), None)
    assert [o.name for o in outputs] == ["null"]  # nothing else opened: the stream goes on to null
    assert len(problems) == 2 and "gm.sf2" in problems[0] and "streaming to null" in problems[1]
    app, engine, _, _ = build(tiny, notices=problems)
    with pytest.raises(TypeError):
        async with app.run_test(size=SIZE) as pilot:
            await first_bar(pilot, app)
            assert "streaming to null" in text_of(app, "#notice")
            app.post_message(News(BarStarted(1, 1, 4.0, 4.0, 120.0, Conditions(), 0, notes=None)))  # broken news
            await pilot.pause(0.2)
    assert isinstance(app.crash, TypeError) and app.stopped
    assert engine.scheduler.finished.is_set()
    assert not app._exit_renderables  # nothing (no traceback) left to print on the terminal


@pilot_test
async def test_changes_from_outside_show_with_their_source_and_a_remote_stop_quits(tiny):
    from streamer.engine import ActionTaken
    from streamer.remote import Remote

    app, engine, _, _ = build(tiny)
    remote = Remote(engine, min_interval_s=0.0).start()
    try:
        async with app.run_test(size=SIZE) as pilot:
            assert remote.change("osc 10.1.2.3:9000", genre="rock", temperature=0.5) is None
            await wait_for(pilot, lambda: "osc 10.1.2.3:9000" in text_of(app, "#notice"), "the outside change")
            notice = text_of(app, "#notice")
            assert "rock · calm at bar" in notice and "temperature 0.50" in notice
            assert app.controls.genre == "rock" and app.controls.temperature == 0.5  # adopted
            assert "→ rock" in text_of(app, "#genres") and "0.50" in text_of(app, "#controls")
            remote.change("osc 10.1.2.3:9000", mood="polka")
            await wait_for(pilot, lambda: "unknown mood 'polka'" in text_of(app, "#notice"), "the refused message")
            engine.post(ActionTaken("stop", "osc 10.1.2.3:9000"))
            await wait_for(pilot, lambda: app.stopped, "the remote stop")
    finally:
        remote.close()
    assert app.stopped and engine.scheduler.finished.is_set()
