"""The terminal instrument: a Textual App over a running `streamer.engine.Engine`.

The app sends immutable `Controls` snapshots to the engine (`set_controls`) and shows what comes back:
engine news arrives as `News` messages posted from the engine's threads (never `call_from_thread`), stats
are polled with `set_interval`. Nothing here blocks the scheduler. `create_app` is the factory that
`moodstream play` and the tests share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static

from model.errors import MoodstreamError
from streamer.controls import BPM_RANGE, GUIDANCE_RANGE, TEMPERATURE_RANGE, Controls
from streamer.tui.messages import News, Notice
from streamer.tui.roll import RollBar
from streamer.tui.widgets import (ConditionPicker, ConditionsBanner, ControlsPanel, NoticeLine, PianoRoll,
                                  StatsPanel)

log = logging.getLogger(__name__)

# Keys as Textual names them, and as the screen shows them.
GENRE_KEYS = ("grave_accent", "1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
GENRE_LABELS = ("`", "1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
MOOD_KEYS = ("a", "s", "d", "f", "g", "h", "j", "k", "l")
STATS_INTERVAL_S = 0.25
PLAYHEAD_INTERVAL_S = 0.1
QUEUED_SHOWN = 3  # bars queued drawn after the one playing


@dataclass(frozen=True)
class Knob:
    """A live control moved by a key pair: `down`/`up` keys change `field` by `step` inside [low, high]."""

    field: str
    down: str
    up: str
    step: float
    low: float
    high: float


KNOBS = (
    Knob("temperature", "t", "T", 0.05, *TEMPERATURE_RANGE),
    Knob("top_p", "p", "P", 0.05, 0.05, 1.0),
    Knob("guidance_w", "w", "W", 0.25, *GUIDANCE_RANGE),
    Knob("bpm", "b", "B", 5.0, *BPM_RANGE),
)
KNOB_KEYS = {k.field: f"{k.down}/{k.up}" for k in KNOBS}
DEFAULT_BPM = 120.0  # where b/B start when the model's tempo is not known yet

HELP = (
    ("` 1 … 0", "genre (as listed on the left)"),
    ("a s d f g …", "mood (as listed on the left)"),
    ("↑ ↓ Enter, mouse", "pick in the focused list; Tab moves between the lists"),
    ("t / T", "temperature down / up"),
    ("p / P", "top-p down / up"),
    ("w / W", "guidance strength down / up"),
    ("b / B", "tempo down / up (bpm); m: back to the model's tempo"),
    ("o", "outputs: cycle FluidSynth / port / both / none"),
    ("r", "record on / off (file name shown under Outputs)"),
    ("c", "MIDI clock on the port on / off"),
    ("x", "panic: every note off now"),
    ("?", "this help"),
    ("q", "quit (all notes off, ports closed, recording saved)"),
)


class HelpScreen(ModalScreen):
    """The key table; any of ? Escape q closes it."""

    BINDINGS = [Binding("question_mark,escape,q", "dismiss", "close help")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for keys, what in HELP:
            table.add_row(keys, what)
        note = Text("\nThe banner shows what plays and, in yellow, a switch waiting for its bar line.",
                    style="dim")
        yield Static(Group(Text("moodstream — keys\n", style="bold"), table, note), id="help")


class MoodstreamApp(App):
    """See the module docstring. `engine` must offer: start(), stop(), set_controls(Controls) -> bar number,
    stats() -> dict, panic(), position_beats(), and (optionally) set_outputs, set_recording, set_midi_clock."""

    CSS_PATH = "moodstream.tcss"
    TITLE = "moodstream"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("x", "panic", "panic"),
        Binding("o", "cycle_outputs", "outputs"),
        Binding("r", "toggle_record", "record"),
        Binding("c", "toggle_clock", "clock"),
        Binding("q", "quit", "quit"),
        Binding("m", "model_tempo", show=False),
        *[Binding(k.down, f"nudge('{k.field}', -1)", show=False) for k in KNOBS],
        *[Binding(k.up, f"nudge('{k.field}', 1)", show=False) for k in KNOBS],
        *[Binding(key, f"pick_genre({i})", show=False) for i, key in enumerate(GENRE_KEYS)],
        *[Binding(key, f"pick_mood({i})", show=False) for i, key in enumerate(MOOD_KEYS)],
    ]

    controls: reactive[Controls] = reactive(Controls, init=False)  # as last sent to the engine
    playing: reactive[tuple[str, str]] = reactive(("any", "any"), init=False)  # conditions of the bar playing
    switch_at_bar: reactive[Optional[int]] = reactive(None, init=False)

    def __init__(self, engine, genres: tuple[str, ...], moods: tuple[str, ...], controls: Controls,
                 seed: Optional[int] = None, output_modes: tuple[str, ...] = (),
                 record_path: Optional[Path] = None, start_engine: bool = True):
        super().__init__()
        self.engine = engine
        self.genres, self.moods = tuple(genres), tuple(moods)
        self.seed = seed
        self.output_modes = output_modes
        self.record_path = record_path
        self.recording = False
        self.midi_clock = True
        self.start_engine = start_engine
        self.queued: list[RollBar] = []
        self.bar_start_beat = 0.0
        self.model_bpm: Optional[float] = None
        self.stopped = False
        self.set_reactive(MoodstreamApp.controls, controls)
        self.set_reactive(MoodstreamApp.playing, (controls.genre, controls.mood))

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield ConditionsBanner(id="banner")
        with Horizontal(id="body"):
            with Vertical(id="pickers"):
                yield ConditionPicker(self.genres, GENRE_LABELS, id="genres")
                yield ConditionPicker(self.moods, MOOD_KEYS, id="moods")
            yield PianoRoll(id="roll")
            with Vertical(id="side"):
                yield ControlsPanel(id="controls")
                yield Static(id="outputs")
                yield StatsPanel(id="stats")
        yield NoticeLine(id="notice")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#genres", ConditionPicker).border_title = "genre"
        self.query_one("#moods", ConditionPicker).border_title = "mood"
        self.query_one("#roll").border_title = "playing"
        self.query_one("#controls").border_title = "controls"
        self.query_one("#outputs").border_title = "outputs"
        self.query_one("#stats").border_title = "stats"
        self._show_conditions()
        self._show_controls()
        self._show_outputs()
        self.query_one(StatsPanel).show({})
        self.set_interval(STATS_INTERVAL_S, self.refresh_stats)
        self.set_interval(PLAYHEAD_INTERVAL_S, self.refresh_playhead)
        if self.start_engine:
            self._engine_call("start the engine", self.engine.start)

    # ---- reactive state -> widgets ----------------------------------------------------------------
    def watch_controls(self) -> None:
        self._show_conditions()
        self._show_controls()

    def watch_playing(self) -> None:
        self._show_conditions()

    def watch_switch_at_bar(self) -> None:
        self._show_conditions()

    @property
    def pending(self) -> Optional[tuple[str, str]]:
        wanted = (self.controls.genre, self.controls.mood)
        return wanted if wanted != self.playing else None

    def _show_conditions(self) -> None:
        pending = self.pending
        self.query_one(ConditionsBanner).show(self.playing, pending, self.switch_at_bar)
        self.query_one("#genres", ConditionPicker).show(self.playing[0], pending[0] if pending else None)
        self.query_one("#moods", ConditionPicker).show(self.playing[1], pending[1] if pending else None)

    def _show_controls(self) -> None:
        c = self.controls
        values = {"temperature": c.temperature, "top_p": c.top_p, "guidance": c.guidance_w, "bpm": c.bpm,
                  "seed": "random" if self.seed is None else self.seed}
        keys = {"temperature": KNOB_KEYS["temperature"], "top_p": KNOB_KEYS["top_p"],
                "guidance": KNOB_KEYS["guidance_w"], "bpm": KNOB_KEYS["bpm"] + " m"}
        self.query_one(ControlsPanel).show(values, keys)

    def _show_outputs(self) -> None:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim")
        table.add_column()
        table.add_row("mode [o]", self.output_mode_name())
        record = "off"
        if self.recording and self.record_path is not None:
            record = f"● {self.record_path.name}"
        elif self.record_path is not None:
            record = f"off ({self.record_path.name})"
        table.add_row("record [r]", Text(record, style="bold red" if self.recording else ""))
        table.add_row("clock [c]", "on" if self.midi_clock else "off")
        self.query_one("#outputs", Static).update(table)

    def output_mode_name(self) -> str:
        names = [getattr(o, "name", str(o)) for o in getattr(self.engine, "outputs", [])]
        return " + ".join(n for n in names if n != "recorder") or "none"

    # ---- actions --------------------------------------------------------------------------------
    def action_pick_genre(self, index: int) -> None:
        if 0 <= index < len(self.genres):
            self.request(genre=self.genres[index])

    def action_pick_mood(self, index: int) -> None:
        if 0 <= index < len(self.moods):
            self.request(mood=self.moods[index])

    @on(OptionList.OptionSelected, "#genres")
    def genre_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_pick_genre(event.option_index)

    @on(OptionList.OptionSelected, "#moods")
    def mood_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_pick_mood(event.option_index)

    def action_nudge(self, field: str, direction: int) -> None:
        knob = next(k for k in KNOBS if k.field == field)
        value = getattr(self.controls, field)
        if value is None:  # tempo follows the model: start from what plays
            value = self.model_bpm or DEFAULT_BPM
        new = round(min(knob.high, max(knob.low, value + direction * knob.step)), 4)
        if new != value or getattr(self.controls, field) is None:
            self.request(**{field: new})

    def action_model_tempo(self) -> None:
        if self.controls.bpm is not None:
            self.request(bpm=None)

    def request(self, **changes) -> None:
        """Send a new controls snapshot; a genre/mood change shows as pending until its bar starts."""
        try:
            controls = self.controls.but(**changes)
        except MoodstreamError as err:
            self.show_notice(str(err), "warning")
            return
        at_bar = self._engine_call("change the controls", self.engine.set_controls, controls)
        if (controls.genre, controls.mood) != (self.controls.genre, self.controls.mood):
            self.switch_at_bar = at_bar if (controls.genre, controls.mood) != self.playing else None
        self.controls = controls

    def action_panic(self) -> None:
        self._engine_call("panic", self.engine.panic)
        self.show_notice("panic: every note off", "info")

    def action_cycle_outputs(self) -> None:
        if not self.output_modes:
            self.show_notice("no other outputs to switch to", "info")
            return
        current = self.output_mode_name()
        modes = list(self.output_modes)
        nxt = modes[(modes.index(current) + 1) % len(modes)] if current in modes else modes[0]
        self._engine_call("switch outputs", self.engine.set_outputs, nxt)
        self._show_outputs()

    def action_toggle_record(self) -> None:
        if self.record_path is None:
            self.show_notice("no recording file: start with --record FILE.mid", "warning")
            return
        want = not self.recording
        if self._engine_call("record", self.engine.set_recording, self.record_path if want else None) is not False:
            self.recording = want
        self._show_outputs()

    def action_toggle_clock(self) -> None:
        self.midi_clock = not self.midi_clock
        self._engine_call("switch the MIDI clock", self.engine.set_midi_clock, self.midi_clock)
        self._show_outputs()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.show_notice("stopping: all notes off, closing outputs …", "info")
        self.shutdown()
        self.exit()

    def shutdown(self) -> None:
        """Stop the engine once (all notes off, ports closed, recording complete)."""
        if not self.stopped:
            self.stopped = True
            self._engine_call("stop", self.engine.stop)

    def on_unmount(self) -> None:
        self.shutdown()

    # ---- news from the engine's threads --------------------------------------------------------
    def on_news(self, message: News) -> None:
        news = message.news
        kind = type(news).__name__
        handler = getattr(self, f"_news_{kind}", None)
        if handler is not None:
            handler(news)

    def _news_BarQueued(self, news) -> None:
        bar = news.bar
        self.queued = [b for b in self.queued if b.index < bar.seq][-8:]
        self.queued.append(RollBar(bar.seq, bar.length_beats, tuple(bar.messages.notes)))
        self._show_roll()

    def _news_BarsDiscarded(self, news) -> None:
        self.queued = [b for b in self.queued if b.index < news.from_seq]
        self._show_roll()

    def _news_BarStarted(self, news) -> None:
        roll = self.query_one(PianoRoll)
        self.queued = [b for b in self.queued if b.index > news.seq]
        roll.playing = RollBar(news.bar_number, news.length_beats, tuple(news.notes))
        self.bar_start_beat = news.start_beat
        roll.playhead_beats = 0.0
        self.model_bpm = news.tempo_qpm
        conditions = (news.conditions.genre, news.conditions.mood)
        if conditions != self.playing:
            self.playing = conditions
        if self.pending is None:
            self.switch_at_bar = None
        self._show_roll()

    def _news_SwitchApplied(self, news) -> None:
        self.playing = (news.conditions.genre, news.conditions.mood)
        if self.pending is None:
            self.switch_at_bar = None

    def _news_Underrun(self, news) -> None:
        self.show_notice(f"underrun at bar {news.bar_number}: the model is slower than real time "
                         "(lower the tempo with b, or use a smaller model)", "warning")

    def _news_OutputFailed(self, news) -> None:
        self.show_notice(f"{news.name}: {news.message} — streaming goes on to the other outputs")
        self._show_outputs()

    def _news_GeneratorFailed(self, news) -> None:
        then = "the stream has stopped: press q and start again" if news.fatal else "resuming from the last good bar"
        self.show_notice(f"generator: {news.message} — {then}")

    def _news_PlaybackStopped(self, news) -> None:
        if news.reason.startswith("error"):
            self.show_notice(f"playback stopped ({news.reason}); press q to quit")

    def _show_roll(self) -> None:
        roll = self.query_one(PianoRoll)
        roll.queued = tuple(self.queued[:QUEUED_SHOWN])
        roll.border_subtitle = f"{len(self.queued)} queued"

    def on_notice(self, message: Notice) -> None:
        self.show_notice(message.text, message.level)

    def show_notice(self, text: str, level: str = "error") -> None:
        self.query_one(NoticeLine).show(text, level)

    # ---- polling ----------------------------------------------------------------------------------
    def refresh_stats(self) -> None:
        stats = self._engine_call("read stats", self.engine.stats, quiet=True)
        if stats is not None:
            self.query_one(StatsPanel).show(stats)

    def refresh_playhead(self) -> None:
        roll = self.query_one(PianoRoll)
        if roll.playing is None:
            return
        beat = self._engine_call("read the position", self.engine.position_beats, quiet=True)
        if beat is not None:
            roll.playhead_beats = max(0.0, min(beat - self.bar_start_beat, roll.playing.beats - 1e-6))

    def _engine_call(self, what: str, fn, *args, quiet: bool = False):
        """Call the engine; a failure becomes one line on screen (never a traceback), the UI goes on."""
        try:
            return fn(*args)
        except MoodstreamError as err:
            self.show_notice(str(err))
        except Exception as err:
            log.exception("could not %s", what)
            if not quiet:
                self.show_notice(f"could not {what}: {type(err).__name__}: {err}")
        return None


def create_app(engine, genres, moods, controls: Controls, **kwargs) -> MoodstreamApp:
    """The app `moodstream play` runs, also used by the tests (see MoodstreamApp for the arguments)."""
    return MoodstreamApp(engine, tuple(genres), tuple(moods), controls, **kwargs)
