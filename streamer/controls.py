"""What the performer controls, as immutable snapshots: `Controls` (genre, mood, sampling, guidance, tempo),
validated on creation with one-line `MoodstreamError`s that name the field, the value and the range.

`ControlSchedule` says which snapshot governs each generated bar (by bar sequence number); a new entry
replaces every entry at or after its bar, so the last switch wins. The generator reads it at bar lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from model.errors import MoodstreamError
from model.vocab import ANY, Conditions

TEMPERATURE_RANGE = (0.0, 2.0)
GUIDANCE_RANGE = (0.0, 10.0)
BPM_RANGE = (20.0, 300.0)


def _check_range(name: str, value, low: float, high: float, hint: str = "") -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) \
            or not low <= value <= high:
        raise MoodstreamError(f"{name} = {value!r} is out of range: use a number from {low:g} to {high:g}{hint}")


@dataclass(frozen=True)
class Controls:
    genre: str = ANY  # a genre of the model's vocabulary; `any` = unconditioned
    mood: str = ANY
    temperature: float = 1.0  # 0 = always the most likely token
    top_p: float = 0.95  # nucleus sampling; 1 = off
    top_k: int = 0  # 0 = off
    guidance_w: float = 2.0  # classifier-free guidance strength; 1 = plain conditioning (batch 1, cheaper).
    # 2.0 is what `moodstream evaluate` found best for the default model (see model/default/README.md).
    bpm: Optional[float] = None  # tempo override; None = the tempo the model writes

    def __post_init__(self):
        _check_range("temperature", self.temperature, *TEMPERATURE_RANGE)
        if not isinstance(self.top_p, (int, float)) or math.isnan(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise MoodstreamError(f"top_p = {self.top_p!r} is out of range: use a number above 0 and at most 1")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise MoodstreamError(f"top_k = {self.top_k!r} is out of range: use a whole number ≥ 0 (0 = off)")
        _check_range("guidance", self.guidance_w, *GUIDANCE_RANGE, " (1 = plain conditioning)")
        if self.bpm is not None:
            _check_range("bpm", self.bpm, *BPM_RANGE)

    @property
    def conditions(self) -> Conditions:
        return Conditions(self.genre, self.mood)

    def but(self, **changes) -> "Controls":
        """A copy with `changes` applied (validated)."""
        return replace(self, **changes)

    def check(self, vocab) -> "Controls":
        """Self, if the genre and mood are in `vocab`; else an error listing the valid names."""
        vocab.check(self.conditions)
        return self


@dataclass(frozen=True)
class ScheduleEntry:
    from_seq: int  # first bar (generation sequence number) these controls govern
    controls: Controls
    switch_id: int = 0  # counts condition changes; 0 = the opening conditions
    requested_s: Optional[float] = None  # clock time the change was asked for (switch latency)


class ControlSchedule:
    """An immutable list of entries sorted by `from_seq`; `with_entry` returns a new schedule in which the
    new entry replaces every entry at or after its bar (last switch wins)."""

    def __init__(self, entries: tuple[ScheduleEntry, ...]):
        if not entries:
            raise ValueError("a control schedule needs at least one entry")
        self.entries = tuple(sorted(entries, key=lambda e: e.from_seq))

    @classmethod
    def starting_with(cls, controls: Controls) -> "ControlSchedule":
        return cls((ScheduleEntry(0, controls),))

    def at(self, seq: int) -> ScheduleEntry:
        """The entry governing bar `seq` (the first entry for bars before it)."""
        found = self.entries[0]
        for entry in self.entries[1:]:
            if entry.from_seq > seq:
                break
            found = entry
        return found

    def with_entry(self, entry: ScheduleEntry) -> "ControlSchedule":
        kept = tuple(e for e in self.entries if e.from_seq < entry.from_seq)
        return ControlSchedule((*kept, entry))

    def pruned(self, before_seq: int) -> "ControlSchedule":
        """Drop the entries that no bar at or after `before_seq` uses (keeps memory bounded)."""
        current = self.at(before_seq)
        return ControlSchedule((current, *(e for e in self.entries if e.from_seq > before_seq)))

    @property
    def last(self) -> ScheduleEntry:
        return self.entries[-1]


@dataclass(frozen=True)
class SwitchAt:
    """Where a live genre/mood switch lands: `beat` = the next whole beat of the playing bar the generator can
    reach (the rest of that bar is written again under the new conditions; a bar switch when no beat is left
    in time); `bar` = the next bar line the generator can make; `phrase:N` = the first bar line after that
    whose bar number is a multiple of N (bar 0 is the first bar played)."""

    bars: int = 1  # 1 = bar (and beat)
    beat: bool = False  # True: `beat` (bars is 1)

    def __post_init__(self):
        if not isinstance(self.bars, int) or not 1 <= self.bars <= 256:
            raise MoodstreamError(f"switch_at phrase:{self.bars!r} is out of range: use phrase:1 to phrase:256")
        if self.beat and self.bars != 1:
            raise MoodstreamError(f"switch_at beat with bars = {self.bars!r}: a beat switch has no phrase length")

    @property
    def name(self) -> str:
        return "beat" if self.beat else "bar" if self.bars == 1 else f"phrase:{self.bars}"

    def landing(self, earliest_bar: int) -> int:
        """The bar number a bar or phrase switch lands on when `earliest_bar` is the first it could (a beat
        switch that finds no beat left in time lands as a bar switch)."""
        return -(-earliest_bar // self.bars) * self.bars


SWITCH_AT_CYCLE = (SwitchAt(beat=True), SwitchAt(1), SwitchAt(2), SwitchAt(4), SwitchAt(8))  # the TUI's `z`


def parse_switch_at(text: str) -> SwitchAt:
    """`--switch-at` / OSC `/moodstream/switch_at`: `beat`, `bar` or `phrase:N`."""
    value = str(text).strip().lower()
    if value == "bar":
        return SwitchAt(1)
    if value == "beat":
        return SwitchAt(beat=True)
    kind, _, count = value.partition(":")
    if kind == "phrase" and count.strip().isdigit():
        return SwitchAt(int(count))
    raise MoodstreamError(f"switch_at {text!r}: use beat, bar or phrase:N (N bars, e.g. phrase:4)")
