"""Cue files (`--cues cues.toml [--cues-loop]`): background music that changes by itself at set bars or times.

    length_bars = 32          # with --cues-loop: the bar cues start again every 32 bars
    length_s = 120            # ... and the time cues every 120 s (each needed only if such cues exist)

    [[cue]]
    bar = 0                   # playback bar (0 = the first), or
    genre = "jazz"
    mood = "calm"

    [[cue]]
    time_s = 45.5             # seconds from the first bar line: lands on a bar line at or after it
    mood = "tense"
    tempo = 100               # bpm, or "model"; also guidance, temperature, top_p

A cue changes only what it names; the rest stays as it was. Bar cues are pinned `horizon_bars` ahead
(lookahead + 3), before the generator reaches their bar, and time cues are reckoned that far ahead from the
tempo playing and the shortest bar heard so far, so a render with the same file and seed gives the same music every time.
A change from outside (OSC, keys) made meanwhile replaces the cues already pinned after it (the last change
wins); the later cues apply as they come. Errors in the file are one line naming the file, the cue and the key.
"""

from __future__ import annotations

import math
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from model.errors import MoodstreamError
from streamer.controls import Controls

CUE_KEYS = {"genre": "genre", "mood": "mood", "tempo": "bpm", "guidance": "guidance_w",
            "temperature": "temperature", "top_p": "top_p"}
TOP_KEYS = ("cue", "length_bars", "length_s")


@dataclass(frozen=True)
class Cue:
    bar: Optional[int]  # one of bar and time_s
    time_s: Optional[float]
    changes: tuple[tuple[str, object], ...]  # (Controls field, value)

    def apply(self, controls: Controls) -> Controls:
        return controls.but(**dict(self.changes))


@dataclass(frozen=True)
class CueSheet:
    cues: tuple[Cue, ...]
    length_bars: Optional[int] = None
    length_s: Optional[float] = None
    path: str = "cues"

    @property
    def bar_cues(self) -> list[Cue]:
        return sorted((c for c in self.cues if c.bar is not None), key=lambda c: c.bar)

    @property
    def time_cues(self) -> list[Cue]:
        return sorted((c for c in self.cues if c.time_s is not None), key=lambda c: c.time_s)

    def conditions(self) -> list[tuple[Optional[str], Optional[str]]]:
        """(genre, mood) each cue names (None where it names none), for checking against a model."""
        changes = [dict(c.changes) for c in self.cues]
        return [(c.get("genre"), c.get("mood")) for c in changes]

    def check_loop(self) -> None:
        """--cues-loop needs a length for each kind of cue the sheet has."""
        if self.bar_cues and self.length_bars is None:
            raise MoodstreamError(f"{self.path}: --cues-loop needs length_bars = N at the top (the sheet has bar "
                                  "cues)")
        if self.time_cues and self.length_s is None:
            raise MoodstreamError(f"{self.path}: --cues-loop needs length_s = SECONDS at the top (the sheet has "
                                  "time cues)")


def _number(value, what: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MoodstreamError(f"{path}: {what} = {value!r} must be a number")
    return float(value)


def load_cues(path: str | Path) -> CueSheet:
    """Read and check a cue file (ranges checked; genre and mood names are checked against the model by the
    caller: `CueSheet.conditions`)."""
    name = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise MoodstreamError(f"--cues {name}: cannot read it: {err.strerror or err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MoodstreamError(f"{name}: not valid TOML: {err}") from err
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise MoodstreamError(f"{name}: unknown key {unknown[0]!r} at the top: use {', '.join(TOP_KEYS)}")
    length_bars = data.get("length_bars")
    if length_bars is not None and (not isinstance(length_bars, int) or isinstance(length_bars, bool)
                                    or length_bars < 1):
        raise MoodstreamError(f"{name}: length_bars = {length_bars!r} must be a whole number ≥ 1")
    length_s = data.get("length_s")
    if length_s is not None and _number(length_s, "length_s", name) <= 0:
        raise MoodstreamError(f"{name}: length_s = {length_s!r} must be above 0")
    entries = data.get("cue", [])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise MoodstreamError(f"{name}: no cues: write [[cue]] tables (see `moodstream stream --help`)")
    cues = []
    for i, entry in enumerate(entries, 1):
        where = f"{name}: cue {i}"
        for key in entry:
            if key not in CUE_KEYS and key not in ("bar", "time_s"):
                raise MoodstreamError(f"{where}: unknown key {key!r}: use bar or time_s, and "
                                      f"{', '.join(CUE_KEYS)}")
        if ("bar" in entry) == ("time_s" in entry):
            raise MoodstreamError(f"{where}: give exactly one of bar and time_s")
        bar = entry.get("bar")
        if bar is not None and (not isinstance(bar, int) or isinstance(bar, bool) or bar < 0):
            raise MoodstreamError(f"{where}: bar = {bar!r} must be a whole number ≥ 0")
        time_s = entry.get("time_s")
        if time_s is not None and _number(time_s, f"cue {i}: time_s", name) < 0:
            raise MoodstreamError(f"{where}: time_s = {time_s!r} must be ≥ 0")
        changes = []
        for key, field in CUE_KEYS.items():
            if key not in entry:
                continue
            value = entry[key]
            if key in ("genre", "mood") and not isinstance(value, str):
                raise MoodstreamError(f"{where}: {key} = {value!r} must be a name in quotes")
            if key == "tempo" and value == "model":
                value = None
            changes.append((field, value))
        if not changes:
            raise MoodstreamError(f"{where}: it changes nothing: give genre, mood, tempo, guidance, temperature or "
                                  "top_p")
        try:
            Controls().but(**{f: v for f, v in changes if f not in ("genre", "mood")})
        except MoodstreamError as err:
            raise MoodstreamError(f"{where}: {err}") from None
        cues.append(Cue(bar, None if time_s is None else float(time_s), tuple(changes)))
    sheet = CueSheet(tuple(cues), length_bars, None if length_s is None else float(length_s), name)
    if length_bars is not None and any(c.bar >= length_bars for c in sheet.bar_cues):
        raise MoodstreamError(f"{name}: a cue at bar {sheet.bar_cues[-1].bar} is past length_bars = {length_bars}")
    if sheet.length_s is not None and any(c.time_s >= sheet.length_s for c in sheet.time_cues):
        raise MoodstreamError(f"{name}: a cue at time_s {sheet.time_cues[-1].time_s:g} is past length_s = "
                              f"{sheet.length_s:g}")
    return sheet


class CuePlayer:
    """Plays a CueSheet into an engine (see the module docstring). `prime()` before `engine.start()`; then it
    listens to BarStarted: on the scheduler's thread in a render (`sync=True`, deterministic), else on the
    news thread."""

    def __init__(self, engine, sheet: CueSheet, loop: bool = False, horizon_bars: Optional[int] = None,
                 sync: bool = False):
        if loop:
            sheet.check_loop()
        self.engine = engine
        self.sheet = sheet
        self.loop = loop
        self.horizon = horizon_bars if horizon_bars is not None else engine.config.lookahead_bars + 3
        self._bar_cues = sheet.bar_cues
        self._time_cues = sheet.time_cues
        self._next_bar = 0  # index into the endless bar-cue sequence
        self._next_time = 0
        self._origin_s: Optional[float] = None
        self._shortest_bar_s: Optional[float] = None
        self._lock = threading.Lock()
        self.applied: list[tuple[int, Cue]] = []  # (bar, cue) as pinned
        engine.news.subscribe(self._on_bar, _bar_started_type(), timed=True, sync=sync)

    def _nth(self, cues: list[Cue], n: int, length, attr: str):
        """The n-th cue of the endless (looped) sequence and its bar/time; None past the end without a loop."""
        if not cues or (not self.loop and n >= len(cues)):
            return None
        rounds, i = divmod(n, len(cues))
        return cues[i], getattr(cues[i], attr) + rounds * (length or 0)

    def prime(self) -> None:
        """Pin the cues of the first bars (before the engine starts): bar cues up to the horizon, time 0 cues."""
        with self._lock:
            self._pin_bar_cues(self.horizon)
            while (found := self._nth(self._time_cues, self._next_time, self.sheet.length_s, "time_s")) \
                    and found[1] <= 0:
                self._pin(0, found[0])
                self._next_time += 1

    def _pin_bar_cues(self, up_to_bar: int) -> None:
        while (found := self._nth(self._bar_cues, self._next_bar, self.sheet.length_bars, "bar")) \
                and found[1] <= up_to_bar:
            self._pin(found[1], found[0])
            self._next_bar += 1

    def _pin(self, bar: int, cue: Cue) -> None:
        try:
            self.engine.set_controls(cue.apply(self.engine.controls), at_bar=self.engine.seq_of_bar(bar),
                                     source="cues")
            self.applied.append((bar, cue))
        except MoodstreamError as err:  # names were checked on loading: only a model without them gets here
            from streamer.news import ControlError

            self.engine.post(ControlError(f"cue at {cue.bar if cue.bar is not None else cue.time_s}: {err}", "cues"))

    def _on_bar(self, news, posted_s: float) -> None:
        with self._lock:
            if self._origin_s is None:
                self._origin_s = posted_s
            bar = news.bar_number
            self._pin_bar_cues(bar + self.horizon)
            bar_s = news.length_beats * 60.0 / news.tempo_qpm if news.tempo_qpm > 0 else 2.0
            # reckon with the shortest bar heard so far, so that a cue does not land before its time when
            # the music goes on in shorter bars (it may land a bar late instead)
            self._shortest_bar_s = bar_s = min(bar_s, self._shortest_bar_s or bar_s)
            now_s = posted_s - self._origin_s
            while (found := self._nth(self._time_cues, self._next_time, self.sheet.length_s, "time_s")):
                cue, at_s = found
                ahead = max(0, math.ceil((at_s - now_s) / bar_s - 1e-9))  # bar lines from this one
                if ahead > self.horizon:
                    break
                self._pin(bar + max(ahead, self.horizon), cue)
                self._next_time += 1


def _bar_started_type():
    from streamer.news import BarStarted

    return BarStarted
