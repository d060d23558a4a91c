"""Scheduler on the fake clock: exact message lists (order, tempo, panic, underrun, retrigger, MIDI clock)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from bar_text import make_bars
from manual_clock import ManualClock, wait_until

from streamer.barqueue import BarQueue, LiveBar
from streamer.bars import Bar, BarBuilder, BarConfig, RemiTable, bar_messages, parse_bar
from streamer.clock import FakeClock
from streamer.outputs.base import Output
from streamer.news import BarNotes, BarStarted, OutputFailed, PlaybackStopped, Underrun
from streamer.outputs.null import MemoryOutput
from streamer.scheduler import Scheduler, SchedulerConfig

C4, E4 = 60, 64


@pytest.fixture(scope="module")
def table(vocab):
    return RemiTable(vocab)


def note(position: int, pitch: int, duration: str = "1.0.8", program: int = 0) -> str:
    return f"Position_{position} Program_{program} Pitch_{pitch} Velocity_63 Duration_{duration}"


def play(bars, max_bars, outputs=None, wait_for_bars=True, notify=None, clock=None, **config):
    clock = clock or FakeClock()
    out = MemoryOutput(clock)
    queue = BarQueue(size=len(bars) + 1)
    for bar in bars:
        queue.put(bar)
    news = []

    def record(item):
        news.append(item)
        if notify:
            notify(item, queue, scheduler)

    scheduler = Scheduler(queue, [out, *(outputs or [])], clock,
                          SchedulerConfig(wait_for_bars=wait_for_bars, start_delay_s=0.0, max_bars=max_bars, **config),
                          notify=record)
    scheduler.run()
    return out, news, scheduler


def summary(out, with_cc=False):
    rows = []
    for sent_s, msg in out.log:
        if msg.type == "control_change" and not with_cc:
            continue
        row = (round(sent_s, 6), msg.type, getattr(msg, "channel", None))
        if msg.type.startswith("note"):
            row += (msg.note,)
        elif msg.type == "program_change":
            row += (msg.program,)
        elif msg.type == "control_change":
            row += (msg.control,)
        rows.append(row)
    return rows


def panic_block(t):
    return [(t, "control_change", c, cc) for cc in (123, 120) for c in range(16)]


def test_exact_messages_in_order_then_panic_at_the_end(vocab, table):
    bars = make_bars(vocab, table, f"{note(0, C4)} {note(8, E4)}", note(0, C4))
    out, news, scheduler = play(bars, max_bars=2)
    assert summary(out) == [  # 120 bpm (the default): a beat is 0.5 s
        (0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4),
        (0.5, "note_off", 0, C4), (0.5, "note_on", 0, E4),
        (1.0, "note_off", 0, E4),
        (2.0, "note_on", 0, C4),
        (2.5, "note_off", 0, C4),
    ]
    ccs = [(round(t, 6), m.type, m.channel, m.control) for t, m in out.log if m.type == "control_change"]
    assert ccs == panic_block(4.0)
    assert [m.time for m in out.messages[:2]] == [0.0, 0.0] and out.messages[3].time == 1.0  # beat stamps
    assert [type(n).__name__ for n in news] == ["BarStarted", "BarStarted", "PlaybackStopped"]
    assert news[-1] == PlaybackStopped(2, "bars")
    stats = scheduler.stats()
    assert stats.bars_played == 2 and stats.underruns == 0 and stats.late_messages == 0
    assert stats.send_error_p99_ms == 0.0  # the fake clock is never late


def test_tempo_changes_move_the_following_events(vocab, table):
    bars = make_bars(vocab, table, note(0, C4),
                     f"Position_0 Tempo_60.32 {note(0, C4)} Position_16 Tempo_250.0 {note(16, E4)}")
    out, _, _ = play(bars, max_bars=2)
    beat_120, beat_60, beat_250 = 0.5, 60 / 60.32, 60 / 250.0
    bar2 = 4 * beat_120
    assert summary(out) == [
        (0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4), (0.5, "note_off", 0, C4),
        (bar2, "note_on", 0, C4),
        (round(bar2 + beat_60, 6), "note_off", 0, C4),
        (round(bar2 + 2 * beat_60, 6), "note_on", 0, E4),
        (round(bar2 + 2 * beat_60 + beat_250, 6), "note_off", 0, E4),
    ]
    stopped_at = out.log[-1][0]
    assert stopped_at == pytest.approx(bar2 + 2 * beat_60 + 2 * beat_250)  # the bar line after bar 2


def test_bpm_override_replaces_the_model_tempo_from_the_next_bar(vocab, table):
    bars = make_bars(vocab, table, note(0, C4), f"Position_0 Tempo_60.32 {note(0, C4)}")

    def on_news(item, queue, scheduler):
        if isinstance(item, BarStarted) and item.bar_number == 0:
            scheduler.set_bpm(60.0)

    out, news, _ = play(bars, max_bars=2, notify=on_news)
    assert summary(out)[3:] == [(2.0, "note_on", 0, C4), (3.0, "note_off", 0, C4)]
    assert [n.tempo_qpm for n in news if isinstance(n, BarStarted)] == [120.0, 60.0]


def test_a_bar_plays_while_it_is_written_exactly_as_it_would_finished(vocab, table):
    texts = (note(0, C4), f"{note(0, E4)} {note(8, C4, '2.0.8')} Position_16 Tempo_60.32 {note(16, E4)} {note(24, 67)}")
    reference, _, _ = play(make_bars(vocab, table, *texts), max_bars=2)
    first = make_bars(vocab, table, texts[0])[0]
    _, state = bar_messages(parse_bar(table, first.tokens))
    ids = [vocab.token_to_id[t] for t in f"Bar_None TimeSig_4/4 {texts[1]}".split()]
    head = ids.index(vocab.token_to_id["Position_8"]) + 1  # the bar line's note, then the next Position

    clock = FakeClock()
    out = MemoryOutput(clock)
    queue = BarQueue(size=2)
    queue.put(first)
    live = LiveBar(1, first.conditions, 0, None)
    builder = BarBuilder(table, state)
    for token in ids[:head]:
        builder.feed(token)
    live.publish(builder)
    queue.offer(live)
    news = []
    scheduler = Scheduler(queue, [out], clock, SchedulerConfig(wait_for_bars=False, start_delay_s=0.0, max_bars=2),
                          notify=news.append)
    scheduler.start()
    # bar 1 starts on time, plays up to the frontier (beat 1: note-offs there may go) and waits there
    assert wait_until(lambda: any(isinstance(n, BarStarted) and n.bar_number == 1 for n in news))
    time.sleep(0.3)
    upto_frontier = [row for row in summary(reference) if row[0] < 2.5 or row[1] == "note_off" and row[0] == 2.5]
    assert summary(out) == upto_frontier and upto_frontier[-1] == (2.5, "note_off", 0, E4)
    for token in ids[head:]:  # the rest of the bar is written while it plays
        if builder.feed(token):
            live.publish(builder)
        time.sleep(0.01)
    messages, _ = builder.finish()
    live.publish(builder)
    assert queue.finish(live, Bar(1, messages, tuple(ids))) == (True, True)
    assert scheduler.join(10)
    assert summary(out, with_cc=True) == summary(reference, with_cc=True)
    stats = scheduler.stats()
    assert (stats.live_bars, stats.underruns, stats.send_error_max_ms) == (1, 0, 0.0)
    started = [n for n in news if isinstance(n, BarStarted)]
    assert [len(n.notes) for n in started] == [1, 1]  # bar 1 started with its bar line's note known
    assert [n for n in news if isinstance(n, BarNotes)] == [BarNotes(1, 1, messages.notes)]


def test_a_bar_still_writing_its_bar_line_notes_starts_on_time_and_sends_the_rest_as_written(vocab, table):
    """The bar line's first note is written, more notes at the bar line are still coming: the bar starts on
    time with that note, and a note written 0.1 s after the bar line goes at once (late), not a bar later."""
    first = make_bars(vocab, table, note(0, C4))[0]
    _, state = bar_messages(parse_bar(table, first.tokens))
    clock = ManualClock()
    out, news = MemoryOutput(clock), []
    queue = BarQueue(size=2)
    queue.put(first)
    live = LiveBar(1, first.conditions, 0, None, pace=2.0)
    builder = BarBuilder(table, state)
    text = f"Bar_None TimeSig_4/4 {note(0, E4)} Program_0 Pitch_67 Velocity_63 Duration_1.0.8 {note(8, C4)}"
    ids = [vocab.token_to_id[t] for t in text.split()]
    second_note = ids.index(vocab.token_to_id["Pitch_67"]) - 1  # its Program token

    def feed(tokens):
        for token in tokens:
            builder.feed(token)
        live.publish(builder)

    feed(ids[:second_note])
    assert builder.frontier_beats == 0.0 and live.ready  # the start tempo is known from the first note
    queue.offer(live)
    scheduler = Scheduler(queue, [out], clock, SchedulerConfig(wait_for_bars=False, start_delay_s=0.0, max_bars=2),
                          notify=news.append)
    scheduler.start()

    def sent(pitch):
        return wait_until(lambda: any(m.type == "note_on" and m.note == pitch and m.time == 4.0 for m in out.messages))

    assert wait_until(lambda: scheduler.seconds_to_next_bar() is not None)
    clock.advance(scheduler.seconds_to_next_bar())  # to bar 1's line (2.0 s), where the clock then stays
    assert sent(E4)
    clock.advance(0.1)
    feed(ids[second_note:])
    assert sent(67)
    messages, _ = builder.finish()
    assert queue.finish(live, Bar(1, messages, tuple(ids))) == (True, True)
    while not scheduler.join(0.01):
        clock.advance(0.05)
    note_ons = [(round(sent_s, 3), m.time, m.note) for sent_s, m in out.log if m.type == "note_on"]
    assert note_ons[:3] == [(0.0, 0.0, C4), (2.0, 4.0, E4), (2.1, 4.0, 67)]
    assert [(m_time, pitch) for _, m_time, pitch in note_ons[3:]] == [(5.0, C4)] and note_ons[3][0] >= 2.5
    stats = scheduler.stats()
    assert (stats.live_bars, stats.underruns) == (1, 0)


@pytest.mark.parametrize("written, pace", [("", 2.0),  # the time signature is read, not the start tempo
                                           (f"{note(0, E4)} Position_8", 0.9)])  # the generator is too slow
def test_a_bar_not_ready_at_its_bar_line_is_an_underrun(vocab, table, written, pace):
    first = make_bars(vocab, table, note(0, C4))[0]
    queue = BarQueue(size=2)
    queue.put(first)
    live = LiveBar(1, first.conditions, 0, None, pace)
    builder = BarBuilder(table)
    for token in [vocab.token_to_id[t] for t in f"Bar_None TimeSig_4/4 {written}".split()]:
        builder.feed(token)
    live.publish(builder)
    queue.offer(live)
    out, news = MemoryOutput(FakeClock()), []

    def on_news(item):
        news.append(item)
        if isinstance(item, Underrun):
            scheduler.stop()

    scheduler = Scheduler(queue, [out], out.clock, SchedulerConfig(wait_for_bars=False, start_delay_s=0.0),
                          notify=on_news)
    scheduler.run()
    assert not queue.playing(live) and scheduler.stats().underruns == 1 and Underrun(1) in news


def test_underrun_is_bridged_with_a_silent_bar(vocab, table):
    first, late = make_bars(vocab, table, note(0, C4), note(0, E4))

    def on_news(item, queue, scheduler):
        if isinstance(item, Underrun):
            queue.put(late)  # the generator catches up during the silent bar

    out, news, scheduler = play([first], max_bars=2, wait_for_bars=False, notify=on_news)
    assert summary(out) == [(0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4), (0.5, "note_off", 0, C4),
                            (4.0, "note_on", 0, E4), (4.5, "note_off", 0, E4)]  # bar 1 silent, bar 2 = 4.0 s
    assert [n for n in news if isinstance(n, Underrun)] == [Underrun(1)]
    assert [(n.bar_number, n.seq) for n in news if isinstance(n, BarStarted)] == [(0, 0), (2, 1)]
    assert scheduler.stats().underruns == 1


def test_panic_sends_every_sounding_note_off_then_cc_and_the_stream_goes_on(vocab, table):
    bars = make_bars(vocab, table, f"{note(0, C4, '6.0.4')} {note(0, E4, '6.0.4')}", note(8, C4))

    def on_news(item, queue, scheduler):
        if isinstance(item, BarStarted) and item.bar_number == 1:
            scheduler.panic()

    out, _, _ = play(bars, max_bars=2, notify=on_news)
    rows = summary(out, with_cc=True)
    assert rows[:4] == [(0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4), (0.0, "note_on", 0, E4),
                        (2.0, "note_off", 0, C4)]
    assert rows[4] == (2.0, "note_off", 0, E4)
    assert rows[5:37] == panic_block(2.0)
    # the 6-beat note_offs due at 3.0 s are not sent again; bar 2's note still plays
    assert rows[37:39] == [(2.5, "note_on", 0, C4), (3.0, "note_off", 0, C4)]
    assert rows[39:] == panic_block(4.0)


def test_a_repeated_key_is_retriggered_and_never_cut(vocab, table):
    bars = make_bars(vocab, table, note(0, C4, "6.0.4"), note(0, C4))
    out, _, _ = play(bars, max_bars=2)
    assert summary(out) == [
        (0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4),
        (2.0, "note_off", 0, C4), (2.0, "note_on", 0, C4),  # retrigger at bar 2
        (3.0, "note_off", 0, C4),  # the key ends with the longer note (6 beats), not at 2.5 s
    ]


def test_max_note_length_cuts_a_held_note(vocab, table):
    bars = make_bars(vocab, table, note(0, C4, "12.0.4"), "", "", config=BarConfig(max_note_beats=6.0))
    out, _, _ = play(bars, max_bars=3)
    assert summary(out) == [(0.0, "program_change", 0, 0), (0.0, "note_on", 0, C4), (3.0, "note_off", 0, C4)]


def test_midi_clock_is_24_per_beat_between_start_and_stop(vocab, table):
    bars = make_bars(vocab, table, note(0, C4), note(0, E4))
    clock = FakeClock()
    port = MemoryOutput(clock, name="port", wants_clock=True)
    out, _, _ = play(bars, max_bars=2, outputs=[port], clock=clock)
    kinds = [m.type for m in port.messages]
    assert kinds[:2] == ["songpos", "start"] and port.messages[0].pos == 0
    start, stop = kinds.index("start"), kinds.index("stop")
    ticks = [(t, m) for t, m in port.log[start:stop] if m.type == "clock"]
    assert len(ticks) == 8 * 24  # two 4/4 bars
    assert [m.time for _, m in ticks[:3]] == [0.0, 1 / 24, 2 / 24]
    assert ticks[24][0] == pytest.approx(0.5)  # one beat at 120 bpm
    assert "clock" not in [m.type for m in out.messages]  # only outputs that ask get clock


class BrokenOutput(Output):
    name = "broken"

    def _send(self, msg):
        if self.sent >= 2:
            raise OSError("JACK server went away")


def test_a_failing_output_is_reported_and_the_others_go_on(vocab, table):
    bars = make_bars(vocab, table, f"{note(0, C4)} {note(8, E4)}", note(0, C4))
    broken = BrokenOutput()
    out, news, scheduler = play(bars, max_bars=2, outputs=[broken])
    assert len(summary(out)) == 7  # everything still reached the working output
    assert [n for n in news if isinstance(n, OutputFailed)] == [OutputFailed("broken", "JACK server went away")]
    assert scheduler.stats().outputs == {"memory": "ok", "broken": "failed: JACK server went away"}


def test_stop_mid_stream_leaves_no_sounding_note(vocab, table):
    import random
    rng = random.Random(1)
    texts = [" ".join(note(p, rng.randrange(40, 90), f"{rng.randrange(0, 4)}.{rng.randrange(1, 8)}.8",
                           program=rng.choice([0, 33]))
                      for p in sorted(rng.sample(range(32), 6))) for _ in range(6)]
    bars = make_bars(vocab, table, *texts)

    def on_news(item, queue, scheduler):
        if isinstance(item, BarStarted) and item.bar_number == 3:
            scheduler.stop()

    out, news, _ = play(bars, max_bars=None, notify=on_news)
    sounding = defaultdict(int)
    for msg in out.messages:
        if msg.type == "note_on":
            sounding[(msg.channel, msg.note)] += 1
        elif msg.type == "note_off":
            sounding[(msg.channel, msg.note)] = 0
    assert not any(sounding.values())
    assert news[-1] == PlaybackStopped(4, "stopped")


def test_remove_output_detaches_by_name_and_says_none_for_an_unknown_one():
    first, second = MemoryOutput(name="first"), MemoryOutput(name="second")
    scheduler = Scheduler(BarQueue(size=1), [first, second], FakeClock(), SchedulerConfig())
    assert scheduler.remove_output("third") is None
    assert scheduler.remove_output("second") is second
    assert scheduler.outputs == [first]


def test_the_rest_of_a_cut_bar_replaces_the_bar_from_the_cut_and_every_old_note_ends_there(vocab, table):
    """A beat switch on the manual clock, exact: bar 0 plays a long C4, E4 at beat 1 and G4 at beat 3; its rest
    from beat 2 comes while beat 0 plays. C4 and E4 end at beat 2, G4 never sounds, the rest's note sounds
    from beat 2, the bar keeps its length and bar 1 follows at its line."""
    from streamer.news import SwitchApplied, SwitchSounded

    first, second = make_bars(vocab, table, f"{note(0, C4, '4.0.4')} {note(8, E4)} {note(24, 67)}", note(0, C4))
    clock = ManualClock()
    out, news = MemoryOutput(clock), []
    queue = BarQueue(size=2)
    queue.put(first)
    queue.put(second)
    scheduler = Scheduler(queue, [out], clock, SchedulerConfig(wait_for_bars=False, start_delay_s=0.0, max_bars=2),
                          notify=news.append)
    scheduler.start()
    assert wait_until(lambda: scheduler.seconds_to_next_bar() is not None)
    clock.advance(0.3)  # beat 0.6 of bar 0 (120 qpm)
    assert wait_until(lambda: any(m.type == "note_on" and m.note == C4 for m in out.messages))
    live = LiveBar(0, first.conditions, 1, 0.3, cut_beats=2)
    builder = BarBuilder(table)
    ids = [vocab.token_to_id[t] for t in f"Bar_None TimeSig_4/4 {note(16, 72)}".split()]
    for token in ids:
        builder.feed(token)
    live.publish(builder)
    queue.offer_fragment(live)
    assert wait_until(lambda: queue.fragment is None)
    messages, _ = builder.finish()
    assert queue.finish(live, Bar(0, messages, tuple(ids), first.conditions, 1, 0.3, cut_beats=2)) == (True, True)
    while not scheduler.join(0.01):
        clock.advance(0.05)
    notes = [(m.time, m.type, m.note) for m in out.messages if m.type.startswith("note")]
    assert notes == [(0.0, "note_on", C4), (1.0, "note_on", E4), (2.0, "note_off", E4), (2.0, "note_off", C4),
                     (2.0, "note_on", 72), (3.0, "note_off", 72), (4.0, "note_on", C4), (5.0, "note_off", C4)]
    assert SwitchApplied(1, first.conditions, 0, 2) in news
    sounded = [n for n in news if isinstance(n, SwitchSounded)]
    assert len(sounded) == 1 and 600.0 <= sounded[0].latency_ms <= 800.0  # asked at 0.3 s, sounded at 1.0 s
    assert [n.notes for n in news if isinstance(n, BarNotes)] == [(*first.messages.notes[:2], *messages.notes)]
    assert [n.start_beat for n in news if isinstance(n, BarStarted)] == [0.0, 4.0]
