"""A small ABC reader for the Nottingham tunes: headers, melody notes and chord symbols, repeats expanded.

`read_tunes(path) -> list[AbcTune]` (headers only, cheap); `parse_tune(tune) -> AbcMelody` gives the tune
as a timeline in whole notes (Fractions): melody notes with MIDI pitches, chord symbols with their start,
the bar length and the pickup. Covers what the Nottingham files use: key signatures and bar accidentals,
lengths, broken rhythm, triplets, ties, chords in brackets, grace notes and decorations (skipped), repeats
with first/second endings, inline fields. Raises `AbcError` on what it cannot follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from training.chords import Chord, note_pc, parse_abc_chord

_MODE_OFFSET = {"maj": 0, "ion": 0, "dor": 2, "phr": 4, "lyd": 5, "mix": 7, "aeo": 9, "min": 9, "m": 9, "loc": 11}
_SHARP_ORDER = "FCGDAEB"
_FLAT_ORDER = "BEADGCF"
_MAJOR_SIGNATURE = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 5: -1, 10: -2, 3: -3, 8: -4, 1: -5}  # tonic pc → ♯/♭
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


class AbcError(ValueError):
    """The tune uses ABC this reader does not follow (the build skips it with this reason)."""


@dataclass(frozen=True)
class AbcTune:
    number: int  # X:
    title: str
    meter: str  # M: as written (last one in the header)
    key: str  # K: as written
    text: str  # the whole tune, header included


@dataclass(frozen=True)
class AbcNote:
    start: Fraction  # whole notes from the first full bar
    length: Fraction
    pitch: int  # MIDI


@dataclass(frozen=True)
class AbcMelody:
    meter: Fraction  # bar length in whole notes (6/8 → 3/4)
    meter_text: str
    tonic: int  # pitch class of the first key
    mode: str  # major | minor
    key_changes: bool  # the tune changes key after it starts
    notes: tuple[AbcNote, ...]
    chords: tuple[tuple[Fraction, Chord | None], ...]  # (start, chord) in time order
    n_bars: int  # whole bars after the pickup


def read_tunes(path: str | Path) -> list[AbcTune]:
    """The tunes of an ABC file (split at X: lines)."""
    text = Path(path).read_text(errors="replace")
    tunes = []
    for block in re.split(r"\n(?=X:)", "\n" + text):
        block = block.strip("\n")
        if not block.startswith("X:"):
            continue
        headers: dict[str, str] = {}
        for line in block.splitlines():
            m = re.match(r"([A-Za-z]):\s*(.*)", line)
            if m and m.group(1) in "XTMKL" and (m.group(1) not in headers or m.group(1) == "M"):
                if m.group(1) == "M" and "K" in headers:
                    continue
                headers[m.group(1)] = m.group(2).strip()
        try:
            number = int(headers.get("X", "0").split()[0])
        except ValueError:
            continue
        tunes.append(AbcTune(number, headers.get("T", ""), headers.get("M", "4/4"), headers.get("K", "C"), block))
    return tunes


def key_tonic_mode(key: str) -> tuple[int, str, dict[str, int]]:
    """(tonic pc, major|minor, letter → accidental) for a K: field such as 'G', 'Em', 'Ador', 'Bb mix'."""
    m = re.match(r"\s*([A-G])([#b]?)\s*([A-Za-z]*)", key)
    if not m:
        if key.strip().lower() in ("", "none"):
            return 0, "major", {}
        raise AbcError(f"key {key!r} not understood")
    tonic = note_pc(m.group(1) + m.group(2))
    mode_word = m.group(3).lower()[:3]
    if mode_word not in _MODE_OFFSET and mode_word:
        mode_word = "m" if mode_word.startswith("m") else mode_word
        if mode_word not in _MODE_OFFSET:
            raise AbcError(f"mode {m.group(3)!r} of key {key!r} not understood")
    offset = _MODE_OFFSET.get(mode_word or "maj", 0)
    ionian = (tonic - offset) % 12
    count = _MAJOR_SIGNATURE[ionian]
    signature = {}
    if count > 0:
        signature = {letter: 1 for letter in _SHARP_ORDER[:count]}
    elif count < 0:
        signature = {letter: -1 for letter in _FLAT_ORDER[:-count]}
    mode = "minor" if offset in (2, 4, 9, 11) else "major"
    return tonic, mode, signature


def _meter_length(meter: str) -> Fraction:
    meter = meter.strip()
    if meter in ("C", "C|"):
        return Fraction(1) if meter == "C" else Fraction(1)
    m = re.fullmatch(r"(\d+)/(\d+)", meter)
    if not m:
        raise AbcError(f"meter {meter!r} not understood")
    return Fraction(int(m.group(1)), int(m.group(2)))


@dataclass
class _Bar:
    # ("note", pitch | None, length, tied-on extra) | ("chord", Chord | None); None pitch = rest
    events: list = field(default_factory=list)
    start_repeat: bool = False
    end_repeat: bool = False
    volta: int | None = None
    closed_by_double: bool = False


_TOKEN = re.compile(r"""
    (?P<field>\[[A-Za-z]:[^\]]*\])
  | (?P<volta>\[[12](?:,[12])?)
  | (?P<bar>:*\|+\]?:*[12]?|\[\|:*|::[12]?|:+(?=\s|$|\[|[A-Ga-gz"]))
  | (?P<chordsym>"[^"]*")
  | (?P<deco>![^!]*!|\+[^+\s]*\+)
  | (?P<grace>\{[^}]*\})
  | (?P<tuplet>\((?P<p>\d)(?::\d*)?(?::\d*)?)
  | (?P<group>\[(?P<inner>(?:\s*[_^=]*[A-Ga-g][,']*[\d/]*-?)+)\s*\](?P<glen>[\d/]*))
  | (?P<note>(?P<acc>\^\^|__|[_^=]?)(?P<letter>[A-Ga-g])(?P<oct>[,']*)(?P<len>\d*/*\d*)(?P<tie>-?))
  | (?P<rest>[zx](?P<rlen>\d*/*\d*))
  | (?P<broken>[<>]+)
  | (?P<tiemark>-)
  | (?P<skip>[\s~.HLMOPSTuvy\\)(]|\r)
""", re.VERBOSE)
_KINDS = ("field", "volta", "bar", "chordsym", "deco", "grace", "tuplet", "group", "note", "rest", "broken", "tiemark", "skip")
_NOTE = re.compile(r"(\^\^|__|[_^=]?)([A-Ga-g])([,']*)([\d/]*)")


def _length(text: str, unit: Fraction) -> Fraction:
    if not text:
        return unit
    m = re.fullmatch(r"(\d*)(/*)(\d*)", text)
    if not m:
        raise AbcError(f"note length {text!r} not understood")
    num = int(m.group(1)) if m.group(1) else 1
    if not m.group(2):
        return unit * num
    den = int(m.group(3)) if m.group(3) else 2 ** len(m.group(2))
    return unit * Fraction(num, den)


def _pitch(acc: str, letter: str, octave: str, signature: dict[str, int], bar_acc: dict) -> int:
    base = 60 + _LETTER_PC[letter.upper()] + (12 if letter.islower() else 0)
    base += 12 * octave.count("'") - 12 * octave.count(",")
    key = (letter.upper(), base // 12)
    if acc:
        shift = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}[acc]
        bar_acc[key] = shift
    else:
        shift = bar_acc.get(key, signature.get(letter.upper(), 0))
    return base + shift


def _body_lines(text: str) -> tuple[list[str], str, str, str]:
    """(body lines, meter, key, unit length) — header ends at the first K:."""
    lines = text.splitlines()
    meter, key, unit = "4/4", "C", ""
    for i, line in enumerate(lines):
        m = re.match(r"([A-Za-z]):\s*(.*)", line)
        if m and m.group(1) == "M":
            meter = m.group(2).strip()
        elif m and m.group(1) == "L":
            unit = m.group(2).strip()
        elif m and m.group(1) == "K":
            key = m.group(2).strip()
            return lines[i + 1:], meter, key, unit
    raise AbcError("no K: field")


def parse_tune(tune: AbcTune) -> AbcMelody:
    """The tune as a timeline (repeats played out, pickup dropped); AbcError if it cannot be followed."""
    body, meter_text, key, unit_text = _body_lines(tune.text)
    tonic, mode, signature = key_tonic_mode(key)
    first_key = (tonic, mode)
    key_changes = False
    bar_length = _meter_length(meter_text)
    unit = Fraction(1, 16) if bar_length < Fraction(3, 4) else Fraction(1, 8)  # ABC's default unit
    if unit_text:
        m = re.fullmatch(r"(\d+)/(\d+)", unit_text)
        if not m:
            raise AbcError(f"unit length {unit_text!r} not understood")
        unit = Fraction(int(m.group(1)), int(m.group(2)))

    bars: list[_Bar] = [_Bar()]
    bar_acc: dict = {}
    tuplet_left, tuplet_factor = 0, Fraction(1)
    broken_next = Fraction(1)
    started = False
    last_note_index: int | None = None
    tie_open = False

    def add_note(pitch, length):
        nonlocal tuplet_left, broken_next, last_note_index, tie_open, started
        length *= broken_next
        broken_next = Fraction(1)
        if tuplet_left:
            length *= tuplet_factor
            tuplet_left -= 1
        started = True
        events = bars[-1].events
        if tie_open and pitch is not None and last_note_index is not None:
            prev_bar, prev_i = last_note_index
            _, prev_pitch, prev_len, prev_extra = bars[prev_bar].events[prev_i]
            if prev_pitch == pitch:  # the tied note sounds on; this slot only keeps time
                bars[prev_bar].events[prev_i] = ("note", prev_pitch, prev_len, prev_extra + length)
                events.append(("note", None, length, Fraction(0)))
                tie_open = False
                return
        events.append(("note", pitch, length, Fraction(0)))
        last_note_index = (len(bars) - 1, len(events) - 1)
        tie_open = False

    for raw in body:
        line = raw.split("%", 1)[0].rstrip()
        fm = re.match(r"([A-Za-z]):\s*(.*)", line)
        if fm:
            name, value = fm.group(1), fm.group(2).strip()
            if name == "M":
                if started and _meter_length(value) != bar_length:
                    raise AbcError("meter changes inside the tune")
                meter_text, bar_length = value, _meter_length(value)
            elif name == "K":
                tonic_k, mode_k, signature = key_tonic_mode(value)
                if started and (tonic_k, mode_k) != first_key:
                    key_changes = True
                if not started:
                    first_key = (tonic_k, mode_k)
            elif name == "L":
                m = re.fullmatch(r"(\d+)/(\d+)", value)
                if m:
                    unit = Fraction(int(m.group(1)), int(m.group(2)))
            continue
        pos = 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if not m:
                raise AbcError(f"cannot read {line[pos:pos + 12]!r}")
            pos = m.end()
            kind = next(name for name in _KINDS if m.group(name) is not None)
            text = m.group(0)
            if kind == "field":
                inner = text[1:-1]
                if inner[0] == "K":
                    tonic_k, mode_k, signature = key_tonic_mode(inner[2:])
                    key_changes = key_changes or (started and (tonic_k, mode_k) != first_key)
                elif inner[0] == "M" and started and _meter_length(inner[2:]) != bar_length:
                    raise AbcError("meter changes inside the tune")
            elif kind == "volta":
                bars[-1].volta = int(text[1])
            elif kind == "bar":
                digits = re.findall(r"[12]$", text)
                bar_text = text.rstrip("12")
                current = bars[-1]
                if bar_text.startswith(":"):
                    current.end_repeat = True
                if bar_text in ("||", "|]"):
                    current.closed_by_double = True
                if current.events or current.end_repeat or current.volta:
                    bars.append(_Bar())
                bar_acc = {}
                if bar_text.endswith(":") and not bar_text == ":":
                    bars[-1].start_repeat = True
                if re.fullmatch(r":+", bar_text):
                    bars[-1].start_repeat = True
                if digits:
                    bars[-1].volta = int(digits[0])
            elif kind == "chordsym":
                symbol = text[1:-1]
                if symbol[:1] in "^_<>@":
                    continue
                bars[-1].events.append(("chord", parse_abc_chord(symbol)))
            elif kind == "tuplet":
                p = int(m.group("p"))
                tuplet_left, tuplet_factor = p, Fraction({2: 3, 3: 2, 4: 3, 6: 2}.get(p, 2), p)
            elif kind == "group":
                notes = _NOTE.findall(m.group("inner"))
                if not notes:
                    continue
                acc, letter, octave, length_text = notes[0]
                pitches = [_pitch(a, l, o, signature, bar_acc) for a, l, o, _ in notes]
                length = _length(length_text, unit) * (_length(m.group("glen"), Fraction(1)) if m.group("glen")
                                                      else 1)
                add_note(max(pitches), length)  # the melody: the top note of a bracket chord
            elif kind == "note":
                pitch = _pitch(m.group("acc"), m.group("letter"), m.group("oct"), signature, bar_acc)
                add_note(pitch, _length(m.group("len"), unit))
                if m.group("tie"):
                    tie_open = True
            elif kind == "tiemark":
                tie_open = True
            elif kind == "rest":
                add_note(None, _length(m.group("rlen"), unit))
                last_note_index = None
            elif kind == "broken":
                events = bars[-1].events if bars[-1].events else (bars[-2].events if len(bars) > 1 else [])
                for i in range(len(events) - 1, -1, -1):
                    if events[i][0] == "note":
                        n = len(text)
                        long, short = Fraction(2 ** (n + 1) - 1, 2 ** n), Fraction(1, 2 ** n)
                        first, second = (long, short) if text[0] == ">" else (short, long)
                        ev = events[i]
                        events[i] = (ev[0], ev[1], ev[2] * first, ev[3])
                        broken_next = second
                        break
    if not bars[-1].events:
        bars.pop()
    played = _expand_repeats(bars)
    return _timeline(played, bar_length, first_key, key_changes, meter_text)


def _expand_repeats(bars: list[_Bar]) -> list[_Bar]:
    out: list[_Bar] = []
    start, pass_no, i = 0, 1, 0
    while i < len(bars) and len(out) < 8 * len(bars) + 16:
        bar = bars[i]
        if bar.start_repeat and pass_no == 1:
            start = i
        if bar.volta is not None and bar.volta != pass_no:
            i += 1
            continue
        out.append(bar)
        if bar.end_repeat and pass_no == 1:
            pass_no, i = 2, start
            continue
        if bar.end_repeat or (pass_no == 2 and bar.volta == 2 and (i + 1 >= len(bars) or bars[i + 1].volta is None)):
            pass_no, start = 1, i + 1
        i += 1
    return out


def _timeline(bars: list[_Bar], bar_length: Fraction, key: tuple[int, str], key_changes: bool,
              meter_text: str) -> AbcMelody:
    notes, chords = [], []
    t = Fraction(0)
    first_bar = sum((ev[2] for ev in bars[0].events if ev[0] == "note"), Fraction(0)) if bars else Fraction(0)
    pickup = first_bar if 0 < first_bar < bar_length else Fraction(0)
    for bar in bars:
        for ev in bar.events:
            if ev[0] == "chord":
                chords.append((t - pickup, ev[1]))
            else:
                _, pitch, length, extra = ev
                if pitch is not None and t >= pickup:
                    notes.append(AbcNote(t - pickup, length + extra, pitch))
                t += length
    total = t - pickup
    n_bars = int(total // bar_length)
    if n_bars < 2 or not notes:
        raise AbcError("fewer than two bars of music")
    end = n_bars * bar_length
    notes = [n for n in notes if n.start < end]
    chords = [(max(s, Fraction(0)), c) for s, c in chords if s < end]
    return AbcMelody(meter=bar_length, meter_text=meter_text, tonic=key[0], mode=key[1], key_changes=key_changes,
                     notes=tuple(notes), chords=tuple(chords), n_bars=n_bars)
