"""The terminal instrument: a Textual App over a `streamer.engine.Engine`.

The app sends immutable `Controls` snapshots to the engine (`set_controls`) and shows what comes back:
engine news arrives as `News` messages posted from the engine's news thread (never `call_from_thread`),
stats and the playhead are polled with `set_interval`. Nothing here waits on the scheduler; output
switches (which may take seconds to find an audio driver) run in a worker thread. An unexpected UI error
is logged, the engine stopped, and `crash` set for the caller to report in one line. `create_app` is the
factory that `moodstream play` and the tests share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

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
from streamer.news import (ActionTaken, BarNotes, BarQueued, BarStarted, BarsDiscarded, ControlError, ControlsChanged,
                           GeneratorFailed, OutputFailed, OutputRecovered, PlaybackStopped, SwitchPending, Underrun)
from streamer.tui.messages import News, Notice, OutputsSet
from streamer.tui.roll import RollBar
from streamer.tui.widgets import (ConditionPicker, ConditionsBanner, ControlsPanel, NoticeLine, PianoRoll,
                                  StatsPanel, two_columns)

log = logging.getLogger(__name__)

# Keys as Textual names them, and as the screen shows them.
GENRE_KEYS = ("grave_accent", "1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "minus", "equals_sign")
GENRE_LABELS = ("`", "1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "-", "=")
MOOD_KEYS = ("a", "s", "d", "f", "g", "h", "j", "k", "l")
OUTPUT_MODES = (("fluidsynth",), ("port",), ("fluidsynth", "port"), ())  # what o cycles through
STATS_INTERVAL_S = 0.25
PLAYHEAD_INTERVAL_S = 0.1
QUEUED_SHOWN = 3  # bars queued drawn after the one playing
QUEUED_KEPT = 16


@dataclass(frozen=True)
class Knob:
    """A live control moved by a key pair: `down`/`up` change `field` by `step` inside [low, high]."""

    field: str
    label: str
    down: str
    up: str
    step: float
    low: float
    high: float
    fmt: str = "{:.2f}"


KNOBS = (
    Knob("temperature", "temperature", "t", "T", 0.05, *TEMPERATURE_RANGE),
    Knob("top_p", "top-p", "p", "P", 0.05, 0.05, 1.0),
    Knob("guidance_w", "guidance", "w", "W", 0.25, *GUIDANCE_RANGE),
    Knob("bpm", "tempo", "b", "B", 5.0, *BPM_RANGE, fmt="{:.0f} bpm"),  # None: the model's tempo (key m)
)
DEFAULT_BPM = 120.0  # where b/B start when the model's tempo is not known yet

HELP = (
    ("` 1 2 … 0 - =", "genre (keys as listed on the left)"),
    ("a s d f g …", "mood (keys as listed on the left)"),
    ("↑ ↓ Enter, mouse", "pick in the focused list; Tab moves between the lists"),
    *((f"{k.down} / {k.up}", f"{k.label} down / up") for k in KNOBS),
    ("m", "tempo: back to the model's own"),
    ("z", "switches land at: bar → phrase:2 → phrase:4 → phrase:8"),
    ("o", "outputs: FluidSynth → port → both → none"),
    ("r", "recording on / off (the file name is shown under outputs)"),
    ("c", "MIDI clock on the port on / off"),
    ("x", "panic: every note off now (the stream goes on)"),
    ("?", "this help (? or Escape closes it)"),
    ("q", "quit: all notes off, ports closed, recording written"),
)


class HelpScreen(ModalScreen):
    """The key table."""

    BINDINGS = [Binding("question_mark,escape,q", "dismiss", "close help")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for keys, what in HELP:
            table.add_row(keys, what)
        note = Text("\nThe banner shows what plays; a switch waiting for its bar line shows as "
                    "'now → next at bar N'.", style="dim")
        yield Static(Group(Text("moodstream — keys\n", style="bold"), table, note), id="help")


class UiLogHandler(logging.Handler):
    """Log records from WARNING up become one-line `Notice`s on screen (posted, never blocking)."""

    def __init__(self, level: int = logging.WARNING):
        super().__init__(level)
        self.app: Optional[App] = None

    def emit(self, record: logging.LogRecord) -> None:
        app = self.app
        if app is None:
            return
        try:
            text = record.getMessage().strip().splitlines()[0]
            app.post_message(Notice(text, "error" if record.levelno >= logging.ERROR else "warning"))
        except Exception:  # never let logging raise into a real-time thread
            pass


def mode_name(names: Sequence[str]) -> str:
    return " + ".join(names) or "none"


class MoodstreamApp(App):
    """See the module docstring. The engine must offer start, stop, set_controls, stats, position_beats,
    panic, set_outputs, set_recording, set_midi_clock and outputs (`streamer.engine.Engine` does)."""

    CSS_PATH = "moodstream.tcss"
    TITLE = "moodstream"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("x", "panic", "panic"),
        Binding("o", "cycle_outputs", "outputs"),
        Binding("r", "toggle_record", "record"),
        Binding("c", "toggle_clock", "clock"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", show=False, priority=True),  # Textual's own only shows a hint
        Binding("m", "model_tempo", show=False),
        Binding("z", "cycle_switch_at", show=False),
        *[Binding(k.down, f"nudge('{k.field}', -1)", show=False) for k in KNOBS],
        *[Binding(k.up, f"nudge('{k.field}', 1)", show=False) for k in KNOBS],
        *[Binding(key, f"pick_genre({i})", show=False) for i, key in enumerate(GENRE_KEYS)],
        *[Binding(key, f"pick_mood({i})", show=False) for i, key in enumerate(MOOD_KEYS)],
    ]

    controls: reactive[Controls] = reactive(Controls, init=False)  # as last sent to the engine
    playing: reactive[tuple[str, str]] = reactive(("any", "any"), init=False)  # conditions of the bar playing
    switch_at_bar: reactive[Optional[int]] = reactive(None, init=False)  # where the pending switch lands

    def __init__(self, engine, genres: Sequence[str], moods: Sequence[str], controls: Controls,
                 seed: Optional[int] = None, output_request: str | Sequence[str] = (),
                 record_path: Optional[Path] = None, midi_clock: bool = True, notices: Sequence[str] = (),
                 start_engine: bool = True):
        from streamer.outputs import parse_output_names

        super().__init__()
        self.engine = engine
        self.genres, self.moods = tuple(genres), tuple(moods)
        self.seed = seed
        self.output_request = parse_output_names(output_request) if output_request else ()
        self.record_path = record_path  # --record, or the last file recorded into
        self.recording = any(getattr(o, "name", "") == "recorder" for o in getattr(engine, "outputs", []))
        self.recordings: list[Path] = []  # files written (reported on exit)
        self.midi_clock = midi_clock
        self.start_notices = tuple(notices)
        self.start_engine = start_engine
        self.queued: list[RollBar] = []
        self.bar_start_beat = 0.0
        self.model_bpm: Optional[float] = None
        self.stopped = False
        self.stop_error: Optional[str] = None
        self.crash: Optional[BaseException] = None
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
        for selector, title in (("#genres", "genre"), ("#moods", "mood"), ("#roll", "playing"),
                                ("#controls", "controls"), ("#outputs", "outputs"), ("#stats", "stats")):
            self.main.query_one(selector).border_title = title
        self._show_conditions()
        self._show_controls()
        self._show_outputs()
        self.main.query_one(StatsPanel).show({})
        if self.start_notices:
            self.show_notice("; ".join(self.start_notices), "warning")
        self.set_interval(STATS_INTERVAL_S, self.refresh_stats)
        self.set_interval(PLAYHEAD_INTERVAL_S, self.refresh_playhead)
        if self.start_engine:
            self._engine_call("start the engine", self.engine.start)

    @property
    def main(self):
        """The instrument's screen, also while the help screen is on top (`query_one` would search that)."""
        return self.screen_stack[0]

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
        """The conditions asked for, while they differ from those playing."""
        wanted = (self.controls.genre, self.controls.mood)
        return wanted if wanted != self.playing else None

    def _show_conditions(self) -> None:
        pending = self.pending or self.playing
        self.main.query_one(ConditionsBanner).show(self.playing, self.pending, self.switch_at_bar)
        for picker, now, next_ in zip(self.main.query(ConditionPicker), self.playing, pending):  # genres, moods
            picker.show(now, next_ if next_ != now else None)

    def _show_controls(self) -> None:
        rows = []
        for knob in KNOBS:
            value = getattr(self.controls, knob.field)
            rows.append((f"{knob.label} {knob.down}/{knob.up}", "model" if value is None else knob.fmt.format(value)))
        switch_at = getattr(self.engine, "switch_at", None)
        rows.append(("switch at z", switch_at.name if switch_at is not None else "bar"))
        rows.append(("seed", "random" if self.seed is None else str(self.seed)))
        self.main.query_one(ControlsPanel).show(rows)

    def _show_outputs(self) -> None:
        if self.recording and self.record_path is not None:
            record = Text(f"● {self.record_path.name}", style="bold red")
        else:
            record = Text("off" + (f" ({self.record_path.name})" if self.record_path else ""))
        self.main.query_one("#outputs", Static).update(two_columns(
            [("play to o", mode_name(self.output_request)), ("record  r", record),
             ("clock   c", "on" if self.midi_clock else "off")]))

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
        if value is None:  # the tempo follows the model: start from what plays
            value = self.model_bpm or DEFAULT_BPM
        new = round(min(knob.high, max(knob.low, value + direction * knob.step)), 4)
        if new != getattr(self.controls, field):
            self.request(**{field: new})

    def action_cycle_switch_at(self) -> None:
        from streamer.controls import SWITCH_AT_CYCLE, SwitchAt

        now = self.engine.switch_at
        nxt = SWITCH_AT_CYCLE[(SWITCH_AT_CYCLE.index(now) + 1) % len(SWITCH_AT_CYCLE)] \
            if now in SWITCH_AT_CYCLE else SwitchAt(1)
        self._engine_call("set where switches land", self.engine.set_switch_at, nxt)
        self._show_controls()
        self.show_notice(f"genre/mood switches land at: {nxt.name}", "info")

    def action_model_tempo(self) -> None:
        if self.controls.bpm is not None:
            self.request(bpm=None)

    def request(self, **changes) -> None:
        """Send a new controls snapshot; a genre/mood change shows as pending until its bar starts."""
        try:  # from the engine's: a change from outside (OSC, MIDI, cues) may not have reached us yet
            controls = self.engine.controls.but(**changes)
        except MoodstreamError as err:
            self.show_notice(str(err), "warning")
            return
        ok, at_bar = self._engine_call("change the controls",
                                       lambda: self.engine.set_controls(controls, source="ui"))
        if not ok:
            return
        if controls.conditions != self.controls.conditions:
            self.switch_at_bar = at_bar
        self.controls = controls

    def action_panic(self) -> None:
        self._engine_call("panic", self.engine.panic)
        self.show_notice("panic: every note off", "info")

    def action_cycle_outputs(self) -> None:
        modes = list(OUTPUT_MODES)
        nxt = modes[(modes.index(self.output_request) + 1) % len(modes)] if self.output_request in modes else modes[0]
        self.output_request = nxt
        self._show_outputs()
        self.show_notice(f"switching outputs to {mode_name(nxt)} …", "info")
        self.run_worker(lambda: self._set_outputs(nxt), thread=True, group="outputs", exclusive=True)

    def _set_outputs(self, names: tuple[str, ...]) -> None:
        """Worker thread: opening FluidSynth may take seconds (it tries each audio driver)."""
        try:
            problems = list(self.engine.set_outputs(names or "none"))
            if names and not [o for o in self.engine.outputs if o.name != "recorder"]:
                problems += self.engine.set_outputs("null")  # keep the stream going somewhere
                problems.append("streaming to null")
        except Exception as err:  # MoodstreamError or an output's own failure: one line
            log.exception("could not switch outputs")
            problems = [f"could not switch outputs: {err}"]
        self.post_message(OutputsSet(problems))

    def on_outputs_set(self, message: OutputsSet) -> None:
        if message.problems:
            self.show_notice("; ".join(message.problems) + " — the other outputs go on")
        else:
            self.show_notice(f"playing to {mode_name(self.output_request)}", "info")
        self._show_outputs()

    def action_toggle_record(self) -> None:
        if self.recording:
            ok, path = self._engine_call("stop recording", self.engine.set_recording, None)
            self.recording = False
            if ok and path is not None:
                self.recordings.append(Path(path))
                self.show_notice(f"recorded {path}", "info")
        else:
            path = self.next_recording_path()
            ok, started = self._engine_call("start recording", self.engine.set_recording, path)
            if ok:
                self.recording, self.record_path = True, Path(started)
                self.show_notice(f"recording into {started}", "info")
        self._show_outputs()

    def next_recording_path(self) -> Path:
        """--record's file the first time (if it is not in use yet), then a new time-stamped name beside it."""
        if self.record_path is not None and not self.recordings and not self.record_path.exists():
            return self.record_path
        folder = self.record_path.parent if self.record_path is not None else Path.cwd()
        return folder / time.strftime("moodstream-%Y%m%d-%H%M%S.mid")

    def action_toggle_clock(self) -> None:
        ok, _ = self._engine_call("switch the MIDI clock", self.engine.set_midi_clock, not self.midi_clock)
        if ok:
            self.midi_clock = not self.midi_clock
        self._show_outputs()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.shutdown()
        self.exit()

    def shutdown(self) -> None:
        """Stop the engine once: all notes off, ports closed, recording written. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        started_s = time.perf_counter()
        try:
            self.engine.stop()
        except MoodstreamError as err:
            self.stop_error = str(err)
        except Exception as err:
            log.exception("engine stop failed")
            self.stop_error = f"stopping failed: {type(err).__name__}: {err}"
        log.info("engine stopped in %.2f s", time.perf_counter() - started_s)
        if self.recording and self.record_path is not None:
            self.recording = False
            self.recordings.append(self.record_path)

    def on_unmount(self) -> None:
        self.shutdown()

    def _handle_exception(self, error: Exception) -> None:
        # Textual would print a traceback when the app exits: log it instead, stop the music, and let
        # the caller print one line (`crash`). Tests still see the exception (run_test re-raises it).
        log.error("the terminal UI failed", exc_info=error)
        if self.crash is None:
            self.crash = error
        self.shutdown()
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        self._close_messages_no_wait()  # no traceback on the terminal (it is in the log)

    # ---- news from the engine's threads --------------------------------------------------------
    def post_news(self, news: object) -> None:
        """The engine's `on_news` callback (its news thread): hand over, never block."""
        self.post_message(News(news))

    def on_news(self, message: News) -> None:
        handler = NEWS_HANDLERS.get(type(message.news))
        if handler is not None:
            handler(self, message.news)

    def _news_bar_queued(self, news: BarQueued) -> None:
        if news.playing:  # it started before it was finished: BarNotes brings its notes to the roll
            return
        bar = news.bar
        self.queued = [b for b in self.queued if b.index < bar.seq][-QUEUED_KEPT + 1:]
        self.queued.append(RollBar(bar.seq, bar.length_beats, tuple(bar.messages.notes)))
        self._show_roll()

    def _news_bars_discarded(self, news: BarsDiscarded) -> None:
        self.queued = [b for b in self.queued if b.index < news.from_seq]
        self._show_roll()

    def _news_switch_pending(self, news: SwitchPending) -> None:
        if (news.controls.genre, news.controls.mood) == (self.controls.genre, self.controls.mood):
            self.switch_at_bar = news.at_bar

    def _news_bar_started(self, news: BarStarted) -> None:
        roll = self.main.query_one(PianoRoll)
        self.queued = [b for b in self.queued if b.index > news.seq]
        roll.playing = RollBar(news.bar_number, news.length_beats, tuple(news.notes))
        roll.playhead_beats = 0.0
        self.bar_start_beat = news.start_beat
        self.model_bpm = news.tempo_qpm
        self.playing = (news.conditions.genre, news.conditions.mood)
        if self.pending is None:
            self.switch_at_bar = None
        self._show_roll()

    def _news_bar_notes(self, news: BarNotes) -> None:
        roll = self.main.query_one(PianoRoll)
        if roll.playing is not None and roll.playing.index == news.bar_number:
            roll.playing = RollBar(news.bar_number, roll.playing.beats, tuple(news.notes))
            self._show_roll()

    def _news_underrun(self, news: Underrun) -> None:
        self.show_notice(f"underrun at bar {news.bar_number}: the model is slower than real time "
                         "(lower the tempo with b, or use a smaller model)", "warning")

    def _news_output_failed(self, news: OutputFailed) -> None:
        self.show_notice(f"{news.name}: {news.message} — the other outputs go on (o switches outputs)")

    def _news_output_recovered(self, news: OutputRecovered) -> None:
        self.show_notice(f"{news.name} works again from bar {news.bar_number}", "info")

    def _news_generator_failed(self, news: GeneratorFailed) -> None:
        then = "the stream has stopped: press q and start again" if news.fatal else "resuming from the last good bar"
        self.show_notice(f"{news.message} — {then}")

    def _news_controls_changed(self, news: ControlsChanged) -> None:
        """A change from outside (OSC, a MIDI controller, a cue): adopt it and say what and from where."""
        if news.source == "ui":
            return
        if news.controls.conditions != self.controls.conditions and news.at_bar is not None:
            self.switch_at_bar = news.at_bar
        self.controls = news.controls
        self.show_notice(f"{news.source}: {news.describe()}", "info")

    def _news_action_taken(self, news: ActionTaken) -> None:
        if news.action == "stop":
            self.show_notice(f"{news.source}: stop", "info")
            self.shutdown()
            self.exit()
            return
        if news.action == "switch_at":
            self._show_controls()
        if news.action == "record":
            if news.detail:
                self.recording, self.record_path = True, Path(news.detail)
            elif self.recording and self.record_path is not None:
                self.recording = False
                self.recordings.append(self.record_path)
            self._show_outputs()
        detail = f" {news.detail}" if news.detail else (" off" if news.action == "record" else "")
        self.show_notice(f"{news.source}: {news.action}{detail}", "info")

    def _news_control_error(self, news: ControlError) -> None:
        self.show_notice(f"{news.source}: {news.message}", "warning")

    def _news_playback_stopped(self, news: PlaybackStopped) -> None:
        if news.reason != "stopped":
            self.show_notice(f"playback stopped ({news.reason}); press q to quit")

    def _show_roll(self) -> None:
        roll = self.main.query_one(PianoRoll)
        roll.queued = tuple(self.queued[:QUEUED_SHOWN])
        roll.border_subtitle = f"{len(self.queued)} queued"

    def on_notice(self, message: Notice) -> None:
        self.show_notice(message.text, message.level)

    def show_notice(self, text: str, level: str = "error") -> None:
        self.main.query_one(NoticeLine).show(text, level)

    # ---- polling ----------------------------------------------------------------------------------
    def _polled(self, widget_type):
        """The instrument's `widget_type`, or None while the app is being torn down (a timer may still fire
        after the widgets are gone)."""
        found = self.main.query(widget_type)
        return found.first() if found else None

    def refresh_stats(self) -> None:
        panel = self._polled(StatsPanel)
        if panel is None:
            return
        ok, stats = self._engine_call("read stats", self.engine.stats, quiet=True)
        if ok:
            panel.show(stats)

    def refresh_playhead(self) -> None:
        roll = self._polled(PianoRoll)
        if roll is None or roll.playing is None:
            return
        ok, beat = self._engine_call("read the position", self.engine.position_beats, quiet=True)
        if ok:
            roll.playhead_beats = max(0.0, min(beat - self.bar_start_beat, roll.playing.beats - 1e-6))

    def _engine_call(self, what: str, fn, *args, quiet: bool = False):
        """Call the engine; a failure becomes one line on screen (never a traceback), the UI goes on.
        Returns (True, fn's result), or (False, None) after a failure."""
        try:
            return True, fn(*args)
        except MoodstreamError as err:
            self.show_notice(str(err))
        except Exception as err:
            log.exception("could not %s", what)
            if not quiet:
                self.show_notice(f"could not {what}: {type(err).__name__}: {err}")
        return False, None


NEWS_HANDLERS = {  # news type → what the app does with it (types without one are not shown)
    BarQueued: MoodstreamApp._news_bar_queued,
    BarsDiscarded: MoodstreamApp._news_bars_discarded,
    SwitchPending: MoodstreamApp._news_switch_pending,
    BarStarted: MoodstreamApp._news_bar_started,
    BarNotes: MoodstreamApp._news_bar_notes,
    Underrun: MoodstreamApp._news_underrun,
    OutputFailed: MoodstreamApp._news_output_failed,
    OutputRecovered: MoodstreamApp._news_output_recovered,
    GeneratorFailed: MoodstreamApp._news_generator_failed,
    ControlsChanged: MoodstreamApp._news_controls_changed,
    ActionTaken: MoodstreamApp._news_action_taken,
    ControlError: MoodstreamApp._news_control_error,
    PlaybackStopped: MoodstreamApp._news_playback_stopped,
}


def create_app(engine, genres: Sequence[str], moods: Sequence[str], controls: Controls, **kwargs) -> MoodstreamApp:
    """The app `moodstream play` runs; the tests build theirs here too (see MoodstreamApp for kwargs)."""
    return MoodstreamApp(engine, genres, moods, controls, **kwargs)
