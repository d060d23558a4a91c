"""The piano roll's drawing (pure): where notes land, their colours, drums, the playhead, queued bars."""

from __future__ import annotations

from rich.style import Style

from streamer.bars import Note
from streamer.tui.roll import (DRUM_COLOUR, FAMILY_COLOURS, LABEL_WIDTH, RollBar, draw_roll, family, legend,
                               note_name, pitch_window)


def cells(line):
    """(char, colour name or None, reverse) per cell of a drawn line, label margin included."""
    out = []
    for i, char in enumerate(line.plain):
        style = Style.null()
        for span in line.spans:
            if span.start <= i < span.end:
                style += span.style if isinstance(span.style, Style) else Style.parse(span.style)
        out.append((char, style.color.name if style.color else None, bool(style.reverse)))
    return out


def test_a_note_lands_on_its_pitch_row_and_beat_columns_in_its_family_colour():
    piano = Note(start_beats=1.0, duration_beats=1.0, pitch=64, velocity=90, program=0)
    bass = Note(start_beats=0.0, duration_beats=2.0, pitch=40, velocity=90, program=33)
    lines = draw_roll([RollBar(7, 4.0, (piano, bass))], width=LABEL_WIDTH + 41, height=25)
    assert len(lines) == 25 and all(len(line.plain) == LABEL_WIDTH + 41 for line in lines)
    filled = {(row, col): (char, colour) for row, line in enumerate(lines)
              for col, (char, colour, _) in enumerate(cells(line)) if char in "█▐"}
    # 40 columns per bar (+1 bar line): 10 columns per beat
    piano_cells = sorted(col - LABEL_WIDTH for (row, col), (_, c) in filled.items() if c == FAMILY_COLOURS[0].lower())
    bass_cells = sorted(col - LABEL_WIDTH for (row, col), (_, c) in filled.items() if c == FAMILY_COLOURS[4].lower())
    assert piano_cells == list(range(10, 20)) and bass_cells == list(range(0, 20))
    piano_row = {row for (row, _), (_, c) in filled.items() if c == FAMILY_COLOURS[0].lower()}
    bass_row = {row for (row, _), (_, c) in filled.items() if c == FAMILY_COLOURS[4].lower()}
    assert len(piano_row) == 1 and len(bass_row) == 1
    assert min(piano_row) < min(bass_row)  # higher pitch, higher row
    assert family(piano) == "piano" and family(bass) == "bass"


def test_drums_go_to_the_bottom_row_and_the_legend_names_each_family_once():
    notes = (Note(0.0, 0.5, 36, 100, -1), Note(2.0, 0.5, 38, 100, -1), Note(0.0, 4.0, 60, 80, 40))
    bar = RollBar(0, 4.0, notes)
    lines = draw_roll([bar], width=LABEL_WIDTH + 17, height=6)
    bottom = cells(lines[-1])
    assert lines[-1].plain.startswith("drm")
    drum_cols = [i for i, (char, colour, _) in enumerate(bottom) if char == "█" and colour == DRUM_COLOUR.lower()]
    assert drum_cols and min(drum_cols) == LABEL_WIDTH and LABEL_WIDTH + 8 in drum_cols  # beats 0 and 2
    strings = FAMILY_COLOURS[5].lower()
    assert not any(colour == strings for _, colour, _ in bottom)
    assert sum(colour == strings for line in lines[:-1] for _, colour, _ in cells(line)) == 16
    assert legend([bar]).plain.split() == ["■", "drums", "■", "strings"]


def test_the_playhead_marks_one_column_of_the_bar_playing_only():
    bar = RollBar(3, 4.0, (Note(0.0, 4.0, 60, 80, 0),))
    queued = RollBar(4, 4.0, (Note(0.0, 4.0, 60, 80, 0),))
    width = LABEL_WIDTH + 2 * 17
    plain = draw_roll([bar, queued], width, 4)
    marked = draw_roll([bar, queued], width, 4, playhead_beats=2.0)
    differing = {col for a, b in zip(plain, marked) for col, (x, y) in enumerate(zip(cells(a), cells(b))) if x != y}
    assert differing == {LABEL_WIDTH + 8}  # 16 columns per bar: beat 2 → column 8
    assert any(reverse for line in marked for (_, _, reverse) in [cells(line)[LABEL_WIDTH + 8]])


def test_queued_bars_follow_the_bar_playing_after_a_bar_line_and_extra_bars_are_left_out():
    bars = [RollBar(i, 4.0, (Note(0.0, 1.0, 60 + i, 80, 0),)) for i in range(6)]
    lines = draw_roll(bars, width=LABEL_WIDTH + 3 * 9, height=8)
    row_text = "".join(line.plain[LABEL_WIDTH:] for line in lines)
    assert all(line.plain[LABEL_WIDTH + 8] == "│" for line in lines)  # 8 columns then a bar line
    notes_drawn = row_text.count("██")
    assert notes_drawn == 3  # three bars fit (8 columns + bar line each); the other three are left out


def test_pitch_window_fits_every_note_and_labels_name_the_c_rows():
    notes = [Note(0, 1, p, 80, 0) for p in (30, 100)]
    low, step = pitch_window(notes, rows=10)
    assert low <= 30 and low + 10 * step > 100
    lines = draw_roll([RollBar(0, 4.0, tuple(notes))], LABEL_WIDTH + 20, 10)
    labels = [line.plain[:LABEL_WIDTH].strip() for line in lines if line.plain[:LABEL_WIDTH].strip()]
    assert labels and all(label.startswith("C") for label in labels)
    assert note_name(60) == "C4" and note_name(61) == "C#4"


def test_too_small_or_empty_areas_draw_blank_lines_without_error():
    assert [line.plain for line in draw_roll([], 5, 3)] == ["     "] * 3
    assert draw_roll([RollBar(0)], 40, 0) == []
    assert len(draw_roll([], 40, 4)) == 4
