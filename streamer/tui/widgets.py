"""The widgets of the terminal instrument. Each takes plain data (names, control values, bars, stats
dicts) through a `show…` method or a reactive, so the app and the tests can drive them without an engine.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from streamer.tui.roll import RollBar, draw_roll, legend

CURRENT_MARK = "●"
PENDING_MARK = "→"


class ConditionPicker(OptionList):
    """A genre or mood list. Every option shows its key; ● marks the one playing, → the one pending.

    Arrows + Enter and the mouse select (OptionList.OptionSelected); the app maps the keys.
    """

    def __init__(self, names: Sequence[str], keys: Sequence[str], **kwargs):
        self.names = tuple(names)
        self.keys = tuple(keys[: len(self.names)]) + ("",) * max(0, len(self.names) - len(keys))
        self._wanted: str | None = None
        super().__init__(*[Option(self._prompt(i, False, False), id=name) for i, name in enumerate(self.names)],
                         **kwargs)

    def _prompt(self, index: int, current: bool, pending: bool) -> Text:
        mark = PENDING_MARK if pending else CURRENT_MARK if current else " "
        text = Text(f"{self.keys[index] or ' '} ", style="bold")
        text.append(f"{mark} ", style="bold yellow" if pending else "bold green")
        text.append(self.names[index], style="bold" if current or pending else "")
        return text

    def show(self, current: str, pending: str | None) -> None:
        for i, name in enumerate(self.names):
            self.replace_option_prompt_at_index(i, self._prompt(i, name == current, name == pending))
        wanted = pending or current
        if wanted != self._wanted and wanted in self.names:  # the cursor follows picks, not every bar
            self._wanted = wanted
            self.highlighted = self.names.index(wanted)


def switch_line(current: tuple[str, str], pending: tuple[str, str] | None, at_bar: int | None) -> str:
    """'jazz · calm' or 'jazz · calm → rock · tense at bar 42'."""
    text = f"{current[0]} · {current[1]}"
    if pending is not None and pending != current:
        text += f" → {pending[0]} · {pending[1]}"
        if at_bar is not None:
            text += f" at bar {at_bar}"
    return text


class ConditionsBanner(Static):
    """The conditions playing and, while one waits for its bar line, the pending switch."""

    def show(self, current: tuple[str, str], pending: tuple[str, str] | None, at_bar: int | None) -> None:
        self.set_class(pending is not None and pending != current, "-pending")
        self.update(switch_line(current, pending, at_bar))


def two_columns(rows: Sequence[tuple[str, object]]) -> Table:
    """Label (dim) and value, one row each."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


class ControlsPanel(Static):
    """Temperature, top-p, guidance strength, tempo (as last set, with their keys) and the seed."""

    def show(self, rows: Sequence[tuple[str, str]]) -> None:
        self.update(two_columns(rows))


class PianoRoll(Widget):
    """The bar playing (with the playhead) and the bars queued after it, plus a bar · beat counter."""

    playing: reactive[RollBar | None] = reactive(None)
    queued: reactive[tuple[RollBar, ...]] = reactive(tuple)
    playhead_beats: reactive[float | None] = reactive(None)

    def counter(self) -> str:
        if self.playing is None:
            return "waiting for the first bar"
        beat = int(self.playhead_beats or 0.0) + 1
        return f"bar {self.playing.index} · beat {min(beat, int(self.playing.beats))}/{int(self.playing.beats)}"

    def render(self):
        bars = ([self.playing] if self.playing is not None else []) + list(self.queued)
        lines = draw_roll(bars, self.size.width, max(1, self.size.height - 2), self.playhead_beats)
        header = Text(self.counter(), style="bold")
        return Group(header, *lines, legend(bars))


def format_stats(stats: Mapping[str, object]) -> Table:
    """Engine stats (tokens/s, real-time factor, lookahead, underruns, late p99, the scheduler thread's
    priority, outputs) as a table."""
    def num(name: str, fmt: str) -> str:
        value = stats.get(name)
        return "—" if value is None else fmt.format(value)

    rows: list[tuple[str, object]] = [
        ("tokens/s", num("tokens_per_s", "{:.0f}")), ("real-time ×", num("realtime_factor", "{:.2f}")),
        ("lookahead", num("lookahead_bars", "{:.0f} bars")), ("underruns", num("underruns", "{}")),
        ("late p99", num("late_p99_ms", "{:.1f} ms")), ("priority", num("realtime_priority", "{}"))]
    for name, status in dict(stats.get("outputs") or {}).items():
        rows.append((f"→ {name}", Text(str(status), style="green" if status == "ok" else "red")))
    return two_columns(rows)


class StatsPanel(Static):
    """Stats polled a few times a second from the engine (the app calls `show` from `set_interval`)."""

    def show(self, stats: Mapping[str, object]) -> None:
        self.update(format_stats(stats))


class NoticeLine(Static):
    """The latest problem in one line (what went wrong and what to do); empty when all is well."""

    def show(self, text: str, level: str = "error") -> None:
        self.set_class(level == "error", "-error")
        self.set_class(level == "warning", "-warning")
        self.update(text)
