"""What a MIDI controller does (`--control-map F.toml`; the default ships as `control_map.toml` beside this file).
Pure: `load_control_map(path)` reads and checks a map (one-line MoodstreamError naming the file and the key,
e.g. `cc.74`), `ControlMap.command(message)` turns one raw MIDI message (a list of bytes) into a `Command`
for the Remote, or None. Genre and mood names are checked against a model with `ControlMap.check_names`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from model.errors import MoodstreamError
from streamer.controls import BPM_RANGE, GUIDANCE_RANGE, TEMPERATURE_RANGE

DEFAULT_MAP = Path(__file__).with_name("control_map.toml")
SECTIONS = ("program", "cc", "note")  # message kinds, as the file names them
TOP_KEYS = ("channel", *SECTIONS)
# knob name in the file → (Controls field, valid range, default cc span)
KNOBS = {
    "temperature": ("temperature", TEMPERATURE_RANGE, TEMPERATURE_RANGE),
    "top_p": ("top_p", (0.0, 1.0), (0.5, 1.0)),  # above 0: checked apart
    "guidance": ("guidance_w", GUIDANCE_RANGE, (0.0, 5.0)),
    "tempo": ("bpm", BPM_RANGE, (60.0, 180.0)),
}
KNOB_OF_FIELD = {field_name: knob for knob, (field_name, _, _) in KNOBS.items()}  # "guidance_w" → "guidance"
ACTIONS = ("panic", "record")
CONTROLS = (*KNOBS, *ACTIONS)
PRESS = 64  # a cc at or above this is a pressed button


@dataclass(frozen=True)
class Command:
    """What one message asks of the Remote: `changes` (Controls fields) for `Remote.change`, or an `action`
    (panic, or record with `value` "toggle") for `Remote.act`."""

    changes: dict = field(default_factory=dict)
    action: Optional[str] = None
    value: object = None


@dataclass(frozen=True)
class Binding:
    key: str  # as the file names it: "cc.74"
    changes: tuple = ()  # (field, value) a switch or a fixed value sets
    knob: Optional[str] = None  # a cc spanning low..high over 0..127: the Controls field
    low: float = 0.0
    high: float = 0.0
    action: Optional[str] = None

    def describe(self) -> str:
        if self.action:
            return self.action + (" (toggle)" if self.action == "record" else "")
        if self.knob:
            return f"{KNOB_OF_FIELD[self.knob]} {self.low:g}-{self.high:g}"
        return ", ".join(f"{KNOB_OF_FIELD.get(f, f)} {'model' if v is None else v}" for f, v in self.changes)


@dataclass(frozen=True)
class ControlMap:
    program: dict  # program number → Binding
    cc: dict
    note: dict
    channel: Optional[int] = None  # 0-based; None = any
    path: str = str(DEFAULT_MAP)

    def command(self, message, last_cc: Optional[dict] = None) -> Optional[Command]:
        """The command for one raw MIDI message, or None (unmapped, another channel, a note-off, a cc that
        did not rise to a press). `last_cc` ({(channel, cc): value}, kept by the caller) is updated."""
        if len(message) < 2:
            return None
        status, channel = message[0] & 0xF0, message[0] & 0x0F
        if status not in (0xB0, 0xC0, 0x90) or (self.channel is not None and channel != self.channel):
            return None
        number = message[1]
        if status == 0xC0:
            binding = self.program.get(number)
        elif status == 0x90:
            binding = self.note.get(number) if len(message) > 2 and message[2] > 0 else None
        else:
            binding = self.cc.get(number)
        if binding is None:
            return None
        if status == 0xB0:
            value = message[2] if len(message) > 2 else 0
            previous = last_cc.get((channel, number)) if last_cc is not None else None
            if last_cc is not None:
                last_cc[(channel, number)] = value
            if binding.knob is not None:
                scaled = binding.low + (binding.high - binding.low) * value / 127
                return Command({binding.knob: float(round(scaled)) if binding.knob == "bpm" else round(scaled, 3)})
            if value < PRESS or (previous is not None and previous >= PRESS):
                return None
        if binding.action is not None:
            return Command(action=binding.action, value="toggle" if binding.action == "record" else None)
        return Command(dict(binding.changes))

    def names(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """([(key, genre)], [(key, mood)]) the map names."""
        genres, moods = [], []
        for section in (self.program, self.cc, self.note):
            for binding in section.values():
                for name, value in binding.changes:
                    if name == "genre":
                        genres.append((binding.key, value))
                    elif name == "mood":
                        moods.append((binding.key, value))
        return genres, moods

    def check_names(self, genres, moods) -> "ControlMap":
        """Self, if every genre and mood it names is in (genres, moods); else one line naming the key."""
        named_genres, named_moods = self.names()
        for kind, named, valid in (("genre", named_genres, genres), ("mood", named_moods, moods)):
            for key, name in named:
                if name not in valid:
                    raise MoodstreamError(f"control map {self.path}: {key}: unknown {kind} {name!r}; valid "
                                          f"{kind}s: {', '.join(valid)}")
        return self

    def describe(self) -> list[str]:
        """One line per binding, for `moodstream controls`."""
        lines = [f"control map {self.path}",
                 f"channel: {'any' if self.channel is None else self.channel + 1}"]
        for section in SECTIONS:
            for number, binding in sorted(getattr(self, section).items()):
                lines.append(f"{section + ' ' + str(number):<12} {binding.describe()}")
        return lines


def load_control_map(path: Optional[str | Path] = None) -> ControlMap:
    """Read and check a map (None: the default); one-line MoodstreamError naming the file and the key."""
    path = Path(path) if path is not None else DEFAULT_MAP
    name = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MoodstreamError(f"--control-map {name}: cannot read it: {err.strerror or err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MoodstreamError(f"control map {name}: not valid TOML: {err}") from err

    def fail(where: str, problem: str):
        raise MoodstreamError(f"control map {name}: {where}: {problem}")

    for key in data:
        if key not in TOP_KEYS:
            fail(key, f"unknown key: use {', '.join(TOP_KEYS)}")
    channel = data.get("channel", "any")
    if channel == "any":
        channel = None
    elif isinstance(channel, int) and not isinstance(channel, bool) and 1 <= channel <= 16:
        channel -= 1
    else:
        fail("channel", f"{channel!r} is out of range: use 1-16 or \"any\"")
    sections = {}
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            fail(section, f"must be a table: write [{section}] and then NUMBER = ... lines")
        bindings = {}
        for number_text, spec in table.items():
            key = f"{section}.{number_text}"
            if not number_text.isdigit() or not 0 <= int(number_text) <= 127:
                fail(key, f"{section} number {number_text!r} is out of range: use 0-127")
            bindings[int(number_text)] = _binding(key, section, spec, fail)
        sections[section] = bindings
    if not any(sections.values()):
        fail("program, cc, note", "the map binds nothing")
    return ControlMap(sections["program"], sections["cc"], sections["note"], channel, name)


def _binding(key: str, section: str, spec, fail) -> Binding:
    if isinstance(spec, str):
        spec = {"control": spec}
    if not isinstance(spec, dict):
        fail(key, f"{spec!r}: write a control name ({', '.join(CONTROLS)}) or a table such as "
                  "{ genre = \"jazz\" } or { control = \"tempo\", min = 60, max = 180 }")
    for k in spec:
        if k not in ("genre", "mood", "control", "min", "max", "value"):
            fail(key, f"unknown key {k!r}: use genre, mood, or control with min/max (cc) or value")
    if "genre" in spec or "mood" in spec:
        if section == "cc":
            fail(key, "a genre/mood switch comes from a program change or a note, not a cc")
        if set(spec) - {"genre", "mood"}:
            fail(key, "a genre/mood switch takes only genre and mood")
        for k in ("genre", "mood"):
            if k in spec and (not isinstance(spec[k], str) or not spec[k]):
                fail(key, f"{k} = {spec[k]!r} must be a name in quotes")
        return Binding(key, tuple((k, spec[k]) for k in ("genre", "mood") if k in spec))
    control = spec.get("control")
    if control not in CONTROLS:
        fail(key, f"unknown control {control!r}: use {', '.join(CONTROLS)}, or genre/mood")
    if control in ACTIONS:
        if set(spec) != {"control"}:
            fail(key, f"{control} takes no min, max or value")
        return Binding(key, action=control)
    field_name, (low_ok, high_ok), (low, high) = KNOBS[control]

    def number(k: str, value) -> float:
        if control == "tempo" and k == "value" and value == "model":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low_ok <= value <= high_ok or (control == "top_p" and value <= 0):
            valid = "a number above 0 and at most 1" if control == "top_p" else f"{low_ok:g}-{high_ok:g}"
            if control == "tempo" and k == "value":
                valid += ' or "model"'
            fail(key, f"{k} = {value!r} is out of range for {control}: use {valid}")
        return float(value)

    if section == "cc":
        if "value" in spec:
            fail(key, "a cc spans min..max over its values; value is for a program change or a note")
        low = number("min", spec.get("min", low))
        high = number("max", spec.get("max", high))
        return Binding(key, knob=field_name, low=low, high=high)
    if "min" in spec or "max" in spec or "value" not in spec:
        fail(key, f"a {section} sets {control} to one value: write {{ control = \"{control}\", value = ... }}, "
                  "or map a cc to span a range")
    return Binding(key, ((field_name, number("value", spec["value"])),))
