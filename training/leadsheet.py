"""A lead sheet: a real chord progression (one chord per beat) and the melody over it, in beats.

POP909 songs and Nottingham tunes become lead sheets (`sources/pop909.py`, `sources/nottingham.py`); the
arrangement generator (`sources/mma.py`) cuts a window of bars, may move it to the parallel mode, and
hands it to MMA. Meters: "4/4", "3/4" and "12/8" (four dotted-quarter beats, eighths = 1/3 beat).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from training.chords import Chord, change_mode_chord, change_mode_pitch

BEATS_PER_BAR = {"4/4": 4, "3/4": 3, "12/8": 4}


class SheetError(ValueError):
    """A song or tune that cannot become a lead sheet (the reason is shown in the build stats)."""


@dataclass(frozen=True)
class LeadNote:
    start_beats: float
    length_beats: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class LeadSheet:
    meter: str  # key of BEATS_PER_BAR
    bars: tuple[tuple[Chord | None, ...], ...]  # one chord (None = no chord) per beat of each bar
    melody: tuple[LeadNote, ...]  # start in beats from the first bar
    tonic: int  # pitch class of the key
    mode: str  # major | minor
    can_change_mode: bool = True  # False when the piece changes key (the map needs one tonic)

    def __post_init__(self):
        if self.meter not in BEATS_PER_BAR:
            raise ValueError(f"LeadSheet.meter must be one of {tuple(BEATS_PER_BAR)}, got {self.meter!r}")
        beats = BEATS_PER_BAR[self.meter]
        if any(len(bar) != beats for bar in self.bars):
            raise ValueError(f"LeadSheet: every bar needs {beats} chords (one per beat)")
        if self.mode not in ("major", "minor"):
            raise ValueError(f"LeadSheet.mode must be 'major' or 'minor', got {self.mode!r}")

    @property
    def beats_per_bar(self) -> int:
        return BEATS_PER_BAR[self.meter]

    @property
    def n_bars(self) -> int:
        return len(self.bars)

    def window(self, start_bar: int, n_bars: int) -> "LeadSheet":
        """Bars [start_bar, start_bar + n_bars), melody shifted to start at 0 and cut at the end."""
        if not (0 <= start_bar and n_bars > 0 and start_bar + n_bars <= self.n_bars):
            raise ValueError(f"window {start_bar}+{n_bars} outside a sheet of {self.n_bars} bars")
        lo = start_bar * self.beats_per_bar
        hi = lo + n_bars * self.beats_per_bar
        melody = tuple(replace(n, start_beats=n.start_beats - lo, length_beats=min(n.length_beats, hi - n.start_beats))
                       for n in self.melody if lo <= n.start_beats < hi)
        return replace(self, bars=self.bars[start_bar:start_bar + n_bars], melody=melody)

    def in_mode(self, mode: str) -> "LeadSheet":
        """The same sheet in the parallel `mode` (unchanged if already there or if it changes key)."""
        if mode == self.mode or not self.can_change_mode:
            return self
        bars = tuple(tuple(None if c is None else change_mode_chord(c, self.tonic, mode) for c in bar)
                     for bar in self.bars)
        melody = tuple(replace(n, pitch=change_mode_pitch(n.pitch, self.tonic, mode)) for n in self.melody)
        return replace(self, bars=bars, melody=melody, mode=mode)

    def chorded_bars(self) -> list[int]:
        """Indices of bars that have at least one chord."""
        return [i for i, bar in enumerate(self.bars) if any(c is not None for c in bar)]
