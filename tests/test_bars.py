"""bars.py: the direct REMI parser agrees with MidiTok on real bars; bar → messages keeps MIDI rules."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.bars import (DRUM_CHANNEL, MELODIC_CHANNELS, BarBuilder, BarConfig, BarState, RemiTable,
                           apply_tempo_override, bar_messages, parse_bar, tempo_qpm)


@pytest.fixture(scope="module")
def table(vocab):
    return RemiTable(vocab)


def ids_of(vocab, tokens: str) -> list[int]:
    return [vocab.token_to_id[t] for t in tokens.split()]


def real_bars(vocab, shared_data, per_source: int = 3):
    """Bars of real files from several sources (4/4, 3/4, 6/8, drums, many programs, tempo changes)."""
    return [bar for bars in real_files(vocab, shared_data, per_source) for bar in bars]


def real_files(vocab, shared_data, per_source: int):
    """The first 40 bars of the first `per_source` files of each source, one list per file."""
    with open(shared_data / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    by_source = defaultdict(list)
    for row in rows:
        folder = row["path"].split("/")[0]
        if folder in ("multitrack", "pop909", "groove", "nottingham", "vgmidi", "emopia"):
            by_source[folder].append(row["path"])
    files = []
    for source, paths in sorted(by_source.items()):
        for path in sorted(paths)[:per_source]:
            files.append(vocab.split_bars(vocab.encode(shared_data / path))[:40])
    return files


def miditok_notes(vocab, bar_ids):
    score = vocab.decode(bar_ids)
    tpq = score.ticks_per_quarter
    notes = []
    for track in score.tracks:
        program = -1 if track.is_drum else track.program
        for n in track.notes:
            notes.append((n.time / tpq, n.duration / tpq, n.pitch, n.velocity, program))
    return sorted(notes), [(t.time / tpq, t.qpm) for t in score.tempos], score


def test_parser_matches_miditok_on_real_bars(vocab, table, shared_data):
    bars = real_bars(vocab, shared_data)
    assert len(bars) > 300
    signatures, with_tempo, notes_total = set(), 0, 0
    for bar in bars:
        parsed = parse_bar(table, bar)
        expected, tempos, score = miditok_notes(vocab, bar)
        got = sorted((n.start_beats, n.duration_beats, n.pitch, n.velocity, n.program) for n in parsed.notes)
        assert got == expected, vocab.tokens(bar)  # ticks / 16: exact binary fractions
        ts = score.time_signatures[0]
        assert parsed.time_signature == (ts.numerator, ts.denominator)
        if parsed.tempos:
            with_tempo += 1
            if parsed.tempos[0][0] > 0:  # MidiTok puts its default tempo at 0 when the bar has none there
                tempos = tempos[1:]
            assert [(o, round(q, 2)) for o, q in parsed.tempos] == [(o, round(q, 2)) for o, q in tempos]
        signatures.add(parsed.time_signature)
        notes_total += len(got)
    assert len(signatures) >= 2 and with_tempo > 0 and notes_total > 3000  # the sample covers the cases


def test_parser_drops_what_miditok_drops(vocab, table):
    bar = ids_of(vocab, "Bar_None TimeSig_4/4 Position_0 Program_0 Pitch_60 Velocity_63 Position_4 "
                        "Program_0 Pitch_62 Velocity_63 Duration_1.0.8 Program_0 Pitch_64 Duration_1.0.8")
    parsed = parse_bar(table, bar)
    expected, _, _ = miditok_notes(vocab, bar)
    assert [(n.start_beats, n.pitch) for n in parsed.notes] == [(e[0], e[2]) for e in expected] == [(0.5, 62)]


def test_six_eight_positions_and_durations(vocab, table):
    bar = ids_of(vocab, "Bar_None TimeSig_6/8 Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8 "
                        "Position_24 Program_0 Pitch_62 Velocity_63 Duration_3.0.8")
    parsed = parse_bar(table, bar)
    assert parsed.length_beats == 3.0
    assert [(n.start_beats, n.duration_beats) for n in parsed.notes] == [(0.0, 0.5), (1.5, 1.5)]


def note_pairs(messages):
    """Every note_on matched to the first later note_off on its key; returns the unmatched ones."""
    open_notes = defaultdict(list)
    for m in messages:
        msg = m.message
        if msg.type == "note_on":
            open_notes[(msg.channel, msg.note)].append(m.offset_beats)
        elif msg.type == "note_off":
            started = open_notes[(msg.channel, msg.note)]
            assert started, f"note_off without note_on: {msg}"
            assert m.offset_beats > started.pop(0)
    return {k: v for k, v in open_notes.items() if v}


def check_midi_rules(bar, program_of=None):
    """Sorted; values in range; a program set on a channel before its first note; notes closed.
    `program_of` (channel → program) carries what earlier bars set."""
    offsets = [m.sort_key for m in bar.messages]
    assert offsets == sorted(offsets)
    program_of = {} if program_of is None else program_of
    for m in bar.messages:
        msg = m.message
        if msg.type == "program_change":
            program_of[msg.channel] = msg.program
        elif msg.type in ("note_on", "note_off"):
            assert 0 <= msg.channel <= 15 and 0 <= msg.note <= 127
        if msg.type == "note_on":
            assert 1 <= msg.velocity <= 127
            assert msg.channel in program_of, "note_on before any program change on its channel"
    assert not note_pairs(bar.messages), "a note_on without its note_off"


def test_messages_from_real_bars_keep_midi_rules(vocab, table, shared_data):
    for bars in real_files(vocab, shared_data, per_source=1):  # each file starts from a fresh state
        state, program_of = BarState(), {}
        for bar_ids in bars:
            parsed = parse_bar(table, bar_ids)
            bar, state = bar_messages(parsed, state)
            check_midi_rules(bar, program_of)
            drums = [m for m in bar.messages if m.message.type == "note_on" and m.message.channel == DRUM_CHANNEL]
            assert len(drums) == sum(1 for n in parsed.notes if n.program == -1)


def message_key(m):
    return (m.offset_beats, m.order, str(m.message))


def test_builder_gives_the_whole_bars_messages_and_each_before_the_frontier_passes_it(vocab, table, shared_data):
    checked = frontiers = 0
    for bars in real_files(vocab, shared_data, per_source=1):
        state = BarState()
        for bar_ids in bars:
            whole, next_state = bar_messages(parse_bar(table, bar_ids), state)
            builder = BarBuilder(table, state)
            out = []
            for token in bar_ids:
                builder.feed(token)
                out += builder.take()
                made = Counter(message_key(m) for m in out)
                due = Counter(message_key(m) for m in whole.messages if m.offset_beats < builder.frontier_beats)
                assert not due - made, "a message below the frontier was not made yet"
                frontiers += builder.frontier_beats > 0
            built, built_state = builder.finish()
            out += builder.take()
            # the same messages, and among equal (offset, order) in the same order as the whole bar
            assert [message_key(m) for m in sorted(out, key=lambda m: m.sort_key)] == \
                [message_key(m) for m in whole.messages]
            assert [message_key(m) for m in built.messages] == [message_key(m) for m in whole.messages]
            assert (built.notes, built.tempo_qpm, built.length_beats) == (whole.notes, whole.tempo_qpm,
                                                                          whole.length_beats)
            assert built_state == next_state
            state = next_state
            checked += 1
    assert checked > 100 and frontiers > 1000


def test_builder_refuses_a_position_that_goes_back(vocab, table):
    builder = BarBuilder(table)
    for token in ids_of(vocab, "Bar_None TimeSig_4/4 Position_8 Program_0 Pitch_60 Velocity_63 Duration_1.0.8"):
        builder.feed(token)
    assert builder.frontier_beats == 1.0
    with pytest.raises(ValueError, match="went back"):
        builder.feed(vocab.token_to_id["Position_4"])


def test_tempo_is_carried_to_bars_without_tempo(vocab, table):
    with_tempo = ids_of(vocab, "Bar_None TimeSig_4/4 Position_0 Tempo_141.61 Program_0 Pitch_60 Velocity_63 "
                               "Duration_1.0.8 Position_16 Tempo_80.65")
    plain = ids_of(vocab, "Bar_None TimeSig_4/4 Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8")
    first, state = bar_messages(parse_bar(table, plain))
    assert first.tempo_qpm == 120.0  # the default before the model writes any tempo
    second, state = bar_messages(parse_bar(table, with_tempo), state)
    tempos = [(m.offset_beats, round(tempo_qpm(m.message), 2)) for m in second.messages if m.message.type == "set_tempo"]
    assert tempos == [(0.0, 141.61), (2.0, 80.65)]
    third, state = bar_messages(parse_bar(table, plain), state)
    assert [round(tempo_qpm(m.message), 2) for m in third.messages if m.message.type == "set_tempo"] == [80.65]
    override = apply_tempo_override(second.messages, 90)
    assert [(m.offset_beats, round(tempo_qpm(m.message), 2)) for m in override if m.message.type == "set_tempo"] \
        == [(0.0, 90.0)]
    assert [m.sort_key for m in override] == sorted(m.sort_key for m in override)


def test_long_notes_are_cut_to_the_maximum(vocab, table):
    bar = ids_of(vocab, "Bar_None TimeSig_4/4 Position_0 Program_0 Pitch_60 Velocity_63 Duration_12.0.4")
    messages, _ = bar_messages(parse_bar(table, bar), config=BarConfig(max_note_beats=3.0))
    off = [m for m in messages.messages if m.message.type == "note_off"]
    assert [m.offset_beats for m in off] == [3.0]
    uncapped, _ = bar_messages(parse_bar(table, bar), config=BarConfig(max_note_beats=16.0))
    assert [m.offset_beats for m in uncapped.messages if m.message.type == "note_off"] == [12.0]


def test_repeated_note_off_comes_before_the_next_on(vocab, table):
    bar = ids_of(vocab, "Bar_None TimeSig_4/4 Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8 "
                        "Position_8 Program_0 Pitch_60 Velocity_63 Duration_1.0.8")
    messages, _ = bar_messages(parse_bar(table, bar))
    at_one = [m.message.type for m in messages.messages if m.offset_beats == 1.0]
    assert at_one == ["note_off", "note_on"]


def test_more_than_fifteen_programs_share_channels(vocab, table):
    tokens = ["Bar_None", "TimeSig_4/4"]
    programs = list(range(0, 40, 2))  # 20 melodic programs
    for i, program in enumerate(programs):
        tokens += [f"Position_{i}", f"Program_{program}", "Pitch_60", "Velocity_63", "Duration_0.1.8"]
    tokens += ["Position_30", "Program_-1", "PitchDrum_36", "Velocity_63", "Duration_0.1.8"]
    tokens += ["Position_31", "Program_0", "Pitch_62", "Velocity_63", "Duration_0.1.8"]  # program 0 again
    messages, state = bar_messages(parse_bar(table, ids_of(vocab, " ".join(tokens))))
    check_midi_rules(messages)
    current = {}
    heard = []
    for m in messages.messages:
        msg = m.message
        if msg.type == "program_change":
            current[msg.channel] = msg.program
        elif msg.type == "note_on":
            heard.append(-1 if msg.channel == DRUM_CHANNEL else current[msg.channel])
            assert msg.channel == DRUM_CHANNEL or msg.channel in MELODIC_CHANNELS
    assert heard == programs + [-1, 0]  # every note sounds with its own program
    assert len(state.programs) == 15
    assert sorted(c for c, _, _ in state.programs) == sorted(MELODIC_CHANNELS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=700), max_size=120))
def test_any_ids_give_valid_messages(vocab, table, ids):
    bar, _ = bar_messages(parse_bar(table, ids))
    check_midi_rules(bar)
    for m in bar.messages:
        assert 0 <= m.offset_beats <= 16 + 8
        if m.message.type != "set_tempo":
            mido.Message.from_bytes(m.message.bytes())  # valid MIDI bytes
