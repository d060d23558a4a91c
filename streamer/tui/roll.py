"""Piano-roll drawing as a pure function: bars of notes (in beats) → lines of Rich text.

`RollBar` holds one bar's notes (`streamer.bars.Note`: beats from its own bar line, program -1 = drums).
`draw_roll` lays out the bar playing and the bars queued after it side by side, pitch upwards, drums on
their own bottom row, each note coloured by its instrument family (General MIDI program // 8), with the
playhead as a bright column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from rich.style import Style
from rich.text import Text

from streamer.bars import Note

# General MIDI instrument families (program // 8), in GM order.
FAMILIES = ("piano", "chrom perc", "organ", "guitar", "bass", "strings", "ensemble", "brass", "reed", "pipe",
            "synth lead", "synth pad", "synth fx", "ethnic", "percussive", "sound fx")
FAMILY_COLOURS = ("#5fafff", "#d7afff", "#ffaf5f", "#87d75f", "#ff5f5f", "#ffd75f", "#d78700", "#ff8787",
                  "#5fd7af", "#87d7ff", "#ff5fd7", "#af87ff", "#00afaf", "#d7d787", "#af875f", "#808080")
DRUM_COLOUR = "#e4e4e4"
PLAYHEAD_STYLE = Style(bgcolor="#444444")
PLAYHEAD_NOTE_STYLE = Style(bold=True, reverse=True)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LABEL_WIDTH = 4  # "C4  "


@dataclass(frozen=True)
class RollBar:
    """One bar of the roll: its index in the stream, its length in beats, its notes."""

    index: int
    beats: float = 4.0
    notes: tuple[Note, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not self.beats > 0:
            raise ValueError(f"beats = {self.beats!r} must be > 0")


def is_drum(note: Note) -> bool:
    return note.program < 0


def family(note: Note) -> str:
    return "drums" if is_drum(note) else FAMILIES[(note.program % 128) // 8]


def colour(note: Note) -> str:
    return DRUM_COLOUR if is_drum(note) else FAMILY_COLOURS[(note.program % 128) // 8]


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def pitch_window(notes: Iterable[Note], rows: int) -> tuple[int, int]:
    """(low, semitones per row) so that every pitched note fits in `rows` rows; C4 region when empty."""
    pitches = [n.pitch for n in notes if not is_drum(n)]
    low, high = (min(pitches), max(pitches)) if pitches else (60, 72)
    step = max(1, math.ceil((high - low + 1) / max(rows, 1)))
    spare = rows * step - (high - low + 1)  # centre the notes in the rows we have
    low = max(0, low - spare // 2)
    return low, step


def draw_roll(bars: Sequence[RollBar], width: int, height: int, playhead_beats: float | None = None) -> list[Text]:
    """`height` lines of `width` cells: bars[0] is the bar playing (playhead inside it), the rest queued.

    Each bar gets the same number of columns; bars that do not fit are left out. The bottom row holds the
    drums when any bar has drums. The left margin names the pitch of every row that holds a C.
    """
    lines = [Text(" " * width) for _ in range(max(height, 0))]
    if height <= 0 or width < LABEL_WIDTH + 9:  # room for one bar of 8 columns + its bar line
        return lines
    all_notes = [n for bar in bars for n in bar.notes]
    has_drums = any(is_drum(n) for n in all_notes)
    pitch_rows = height - 1 if has_drums and height > 1 else height
    low, step = pitch_window(all_notes, pitch_rows)

    usable = width - LABEL_WIDTH
    per_bar = max(8, usable // max(len(bars), 1) - 1)
    shown = bars[: max(1, usable // (per_bar + 1))] if bars else []

    grid: list[list[tuple[str, Style | None]]] = [[(" ", None)] * usable for _ in range(height)]
    for slot, bar in enumerate(shown):
        x0 = slot * (per_bar + 1)
        cols_per_beat = per_bar / bar.beats
        for row in range(height):  # bar line, beat dots on the bottom row
            grid[row][x0 + per_bar] = ("│", Style(color="#585858"))
        for beat in range(int(bar.beats)):
            x = x0 + int(beat * cols_per_beat)
            if grid[height - 1][x][0] == " ":
                grid[height - 1][x] = ("·", Style(color="#585858"))
        for note in sorted(bar.notes, key=lambda n: (is_drum(n), n.start_beats)):
            row = height - 1 if is_drum(note) else pitch_rows - 1 - (note.pitch - low) // step
            if not 0 <= row < height:
                continue
            start = x0 + min(per_bar - 1, max(0, int(note.start_beats * cols_per_beat)))
            end_beats = note.start_beats + note.duration_beats
            end = x0 + min(per_bar, max(int(math.ceil(end_beats * cols_per_beat)), start - x0 + 1))
            style = Style(color=colour(note))
            grid[row][start] = ("▐" if start > x0 and grid[row][start - 1][0] == "█" else "█", style)
            for x in range(start + 1, end):
                grid[row][x] = ("█", style)
        if slot == 0 and playhead_beats is not None:
            x = x0 + min(per_bar - 1, max(0, int(playhead_beats * cols_per_beat)))
            for row in range(height):
                char, style = grid[row][x]
                grid[row][x] = (char, (style or Style()) + (PLAYHEAD_NOTE_STYLE if char != " " else PLAYHEAD_STYLE))

    for row, cells in enumerate(grid):
        text = Text(_row_label(row, pitch_rows, low, step, has_drums), style="dim")
        for char, style in cells:
            text.append(char, style)
        lines[row] = text
    return lines


def _row_label(row: int, pitch_rows: int, low: int, step: int, has_drums: bool) -> str:
    if has_drums and row == pitch_rows:
        return "drm ".ljust(LABEL_WIDTH)
    bottom = low + (pitch_rows - 1 - row) * step
    c = next((p for p in range(bottom, bottom + step) if p % 12 == 0), None)
    return (note_name(c) if c is not None else "").ljust(LABEL_WIDTH)


def legend(bars: Sequence[RollBar]) -> Text:
    """One line naming the instrument families on screen, each in its colour."""
    seen: dict[str, str] = {}
    for bar in bars:
        for note in bar.notes:
            seen.setdefault(family(note), colour(note))
    text = Text()
    for name, col in seen.items():
        text.append("■ ", Style(color=col))
        text.append(f"{name}  ")
    return text
