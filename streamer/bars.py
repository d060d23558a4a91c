"""One bar of REMI token ids → timed MIDI messages, in quarter-note beats from the bar line. Pure: no
threads, no I/O, no clock.

`parse_bar(table, ids)` reads the notes straight from the ids (`table`: the shared `model.remi.RemiTable`)
with MidiTok's own rules (a note is Program → Pitch|PitchDrum → Velocity → Duration; anything else in
between drops it; Positions move the time, backwards too); tests/test_bars.py checks it against
`vocab.decode` on real bars.
`bar_messages(parsed, state, config)` turns notes into note_on/note_off/program_change messages and one
`set_tempo` at offset 0 (the tempo carried from earlier bars: a bar decoded alone forgets it), with drums
on channel 9 (MIDI channel 10), up to 15 melodic programs on the other channels (least recently used
channel reassigned beyond that), note lengths capped, every value inside its MIDI range, and every
note_on followed by its note_off. `BarState` is the immutable state carried from bar to bar.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import mido

from model.remi import (DURATION, GENRE, MOOD, OTHER, PITCH, PITCH_DRUM, POSITION, PROGRAM, TEMPO, TIME_SIG,
                        VELOCITY, RemiTable)
from model.vocab import Conditions

DRUM_CHANNEL = 9  # MIDI channel 10, 0-based
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)
DEFAULT_TEMPO_QPM = 120.0

# Sort order of messages at the same beat: note-offs first (a repeated note is never cut), then
# tempo and program changes (before the notes they apply to), then note-ons.
ORDER_NOTE_OFF, ORDER_SETUP, ORDER_NOTE_ON = 0, 1, 2

@dataclass(frozen=True)
class Note:
    """One note of a bar. `program` -1 = drums. Times in quarter-note beats from the bar line."""

    start_beats: float
    duration_beats: float
    pitch: int
    velocity: int
    program: int


@dataclass(frozen=True)
class ParsedBar:
    time_signature: tuple[int, int]  # (numerator, denominator); 4/4 when the bar has no TimeSig
    length_beats: float  # quarter notes: numerator × 4 / denominator
    notes: tuple[Note, ...]  # in token order
    tempos: tuple[tuple[float, float], ...]  # (offset_beats, qpm) of the bar's Tempo tokens


class BarParser:
    """Reads one bar's ids one at a time with MidiTok's rules (see `parse_bar`); after each `feed`,
    `notes`, `tempos`, `time_signature` and `now_beats` (the time of the last Position) are up to date."""

    def __init__(self, table: RemiTable):
        self._kinds, self._values = table.kinds, table.values
        self._table = table
        self.time_signature = (4, 4)
        self.seen_timesig = False
        self._step_beats = table.position_beats.get(4, 0.125)
        self._durations = table.duration_beats.get(4, {})
        self.now_beats = 0.0
        self._program = 0
        self._pitch = self._velocity = 0
        self._expect = OTHER  # VELOCITY or DURATION while a note is being read
        self.notes: list[Note] = []
        self.tempos: list[tuple[float, float]] = []

    @property
    def length_beats(self) -> float:
        numerator, denominator = self.time_signature
        return numerator * 4.0 / denominator

    def feed(self, token_id: int) -> None:
        kinds, values = self._kinds, self._values
        kind = kinds[token_id] if 0 <= token_id < len(kinds) else OTHER
        if kind == GENRE or kind == MOOD:
            return
        if self._expect == VELOCITY and kind == VELOCITY:
            self._velocity, self._expect = int(values[token_id]), DURATION
            return
        if self._expect == DURATION and kind == DURATION:
            self.notes.append(Note(self.now_beats, self._durations.get(token_id, 0.0), self._pitch, self._velocity,
                                   self._program))
            self._expect = OTHER
            return
        self._expect = OTHER  # anything else drops the note being read
        if kind == PITCH or kind == PITCH_DRUM:
            self._pitch, self._expect = int(values[token_id]), VELOCITY
        elif kind == PROGRAM:
            self._program = int(values[token_id])
        elif kind == POSITION:
            self.now_beats = values[token_id] * self._step_beats
        elif kind == TEMPO:
            self.tempos.append((self.now_beats, values[token_id]))
        elif kind == TIME_SIG and not self.seen_timesig:
            self.seen_timesig = True
            self.time_signature = self._table.time_signature[token_id]
            denominator = self.time_signature[1]
            self._step_beats = self._table.position_beats.get(denominator, self._step_beats)
            self._durations = self._table.duration_beats.get(denominator, self._durations)

    def parsed(self) -> "ParsedBar":
        return ParsedBar(self.time_signature, self.length_beats, tuple(self.notes), tuple(self.tempos))


def parse_bar(table: RemiTable, ids: Sequence[int]) -> ParsedBar:
    """The notes, time signature and tempo changes of one bar of ids. Never raises on bad input: condition
    tokens are skipped, the first TimeSig counts, a Pitch not followed at once by Velocity then Duration
    is dropped (as MidiTok does), unknown ids are ignored."""
    parser = BarParser(table)
    for token_id in ids:
        parser.feed(token_id)
    return parser.parsed()


@dataclass(frozen=True)
class BarConfig:
    max_note_beats: float = 8.0  # longer notes are cut to this (a held note never outlives 2 bars of 4/4)
    min_note_beats: float = 1.0 / 64  # shorter notes are lengthened, so note_off always follows note_on
    default_tempo_qpm: float = DEFAULT_TEMPO_QPM  # before the model has written any Tempo token

    def __post_init__(self):
        if not self.max_note_beats > 0:
            raise ValueError(f"max_note_beats = {self.max_note_beats!r} must be > 0")
        if not 0 < self.min_note_beats <= self.max_note_beats:
            raise ValueError(f"min_note_beats = {self.min_note_beats!r} must be in (0, max_note_beats]")
        if not 1 <= self.default_tempo_qpm <= 1000:
            raise ValueError(f"default_tempo_qpm = {self.default_tempo_qpm!r} must be in [1, 1000]")


@dataclass(frozen=True)
class BarState:
    """What a bar inherits from the bars before it: the tempo and which program sits on which channel."""

    tempo_qpm: float | None = None  # last Tempo token seen (None: none yet → BarConfig.default_tempo_qpm)
    programs: tuple[tuple[int, int, int], ...] = ()  # (channel, program, last use stamp), melodic only
    drums_announced: bool = False  # program change 0 sent on the drum channel
    stamp: int = 0  # use counter for least-recently-used channel reassignment


@dataclass(frozen=True)
class TimedMessage:
    """A MIDI message at `offset_beats` from its bar line; `order` breaks ties (see ORDER_*)."""

    offset_beats: float
    order: int
    message: mido.Message | mido.MetaMessage = field(compare=False)

    @property
    def sort_key(self) -> tuple[float, int]:
        return (self.offset_beats, self.order)


@dataclass(frozen=True)
class BarMessages:
    time_signature: tuple[int, int]
    length_beats: float
    tempo_qpm: float  # tempo at the bar line
    messages: tuple[TimedMessage, ...]  # sorted by (offset_beats, order), stable within a tie
    notes: tuple[Note, ...]  # as played (lengths capped), for display


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, int(round(value))))


def _channel_for(program: int, programs: dict[int, tuple[int, int]], stamp: int) -> tuple[int, bool]:
    """The melodic channel for `program` (program → (channel, last use)), updating `programs` in place;
    True when the channel is newly (re)assigned and needs a program change."""
    if program in programs:
        channel, _ = programs[program]
        programs[program] = (channel, stamp)
        return channel, False
    used = {channel for channel, _ in programs.values()}
    free = [c for c in MELODIC_CHANNELS if c not in used]
    if free:
        channel = free[0]
    else:  # more than 15 programs: take the least recently used channel
        evicted = min(programs, key=lambda p: programs[p][1])
        channel, _ = programs.pop(evicted)
    programs[program] = (channel, stamp)
    return channel, True


class _MessageWriter:
    """Messages of one bar, written event by event in time order: `tempo` for each Tempo, `note` for each
    note (by start time). The set_tempo at offset 0 is written once the start tempo is known (`fix_start`:
    at the first note, the first tempo change after the bar line, or the end)."""

    def __init__(self, state: BarState, config: BarConfig):
        self.config = config
        self.timed: list[TimedMessage] = []
        self.played: list[Note] = []
        self._carried = state.tempo_qpm
        self.tempo = state.tempo_qpm  # the tempo the next bar inherits
        self._first_tempo: float | None = None  # a valid Tempo at the bar line, when it came first
        self._any_tempo = False
        self.start_tempo: float | None = None  # set by fix_start
        self._programs = {program: (channel, used) for channel, program, used in state.programs}
        self._stamp, self._drums_announced = state.stamp, state.drums_announced

    def fix_start(self) -> None:
        if self.start_tempo is not None:
            return
        carried = self._carried if self._carried is not None else self.config.default_tempo_qpm
        self.start_tempo = self._first_tempo if self._first_tempo is not None else carried
        self.timed.append(TimedMessage(0.0, ORDER_SETUP, mido.MetaMessage("set_tempo",
                                                                          tempo=mido.bpm2tempo(self.start_tempo))))

    def tempo_change(self, offset: float, qpm: float) -> None:
        if not 1.0 <= qpm <= 1000.0:
            return
        if not self._any_tempo and offset <= 0.0:
            self._first_tempo = qpm
        self._any_tempo = True
        self.tempo = qpm
        if offset > 0.0:
            self.fix_start()
            tempo = mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm))
            self.timed.append(TimedMessage(offset, ORDER_SETUP, tempo))

    def note(self, note: Note) -> None:
        self.fix_start()
        config, timed = self.config, self.timed
        start = max(0.0, note.start_beats)
        duration = min(max(note.duration_beats, config.min_note_beats), config.max_note_beats)
        pitch, velocity = _clamp(note.pitch, 0, 127), _clamp(note.velocity, 1, 127)
        if note.program < 0:
            channel = DRUM_CHANNEL
            if not self._drums_announced:
                self._drums_announced = True
                timed.append(TimedMessage(start, ORDER_SETUP,
                                          mido.Message("program_change", channel=channel, program=0)))
        else:
            program = _clamp(note.program, 0, 127)
            self._stamp += 1
            channel, assigned = _channel_for(program, self._programs, self._stamp)
            if assigned:
                timed.append(TimedMessage(start, ORDER_SETUP,
                                          mido.Message("program_change", channel=channel, program=program)))
        timed.append(TimedMessage(start, ORDER_NOTE_ON,
                                  mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
        timed.append(TimedMessage(start + duration, ORDER_NOTE_OFF,
                                  mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        self.played.append(Note(start, duration, pitch, velocity, note.program))

    def finish(self, time_signature: tuple[int, int], length_beats: float) -> tuple[BarMessages, BarState]:
        self.fix_start()
        timed = sorted(self.timed, key=lambda m: m.sort_key)
        programs = tuple(sorted((c, p, u) for p, (c, u) in self._programs.items()))
        new_state = BarState(self.tempo, programs, self._drums_announced, self._stamp)
        return BarMessages(time_signature, length_beats, self.start_tempo, tuple(timed), tuple(self.played)), new_state


def bar_messages(parsed: ParsedBar, state: BarState = BarState(),
                 config: BarConfig = BarConfig()) -> tuple[BarMessages, BarState]:
    """Timed messages for one parsed bar, and the state the next bar inherits."""
    writer = _MessageWriter(state, config)
    for offset, qpm in parsed.tempos:
        writer.tempo_change(offset, qpm)
    for note in sorted(parsed.notes, key=lambda n: n.start_beats):  # stable: token order within a beat
        writer.note(note)
    return writer.finish(parsed.time_signature, parsed.length_beats)


class BarBuilder:
    """One bar's messages built while its ids are sampled, for a bar that starts playing before it is
    finished. Needs Positions in increasing order and a position's Tempo before its notes (the grammar's
    rules): the start tempo is known at the first note or the first Position after 0. After each `feed`,
    every message the bar will have at an offset below `frontier_beats` has been made (`take()` hands out
    the new ones, in the order `bar_messages` sorts them among equals); `finish()` equals
    `bar_messages(parse_bar(table, ids), state, config)` for the same ids."""

    def __init__(self, table: RemiTable, state: BarState = BarState(), config: BarConfig = BarConfig()):
        self._parser = BarParser(table)
        self._writer = _MessageWriter(state, config)
        self._taken = 0

    @property
    def length_beats(self) -> float:
        return self._parser.length_beats

    @property
    def started(self) -> bool:
        """The bar's time signature has been read (its length is known)."""
        return self._parser.seen_timesig

    @property
    def frontier_beats(self) -> float:
        return self._parser.now_beats if self._writer.start_tempo is not None else 0.0

    @property
    def start_tempo_qpm(self) -> float | None:
        return self._writer.start_tempo

    @property
    def notes(self) -> tuple[Note, ...]:
        return tuple(self._writer.played)

    def feed(self, token_id: int) -> bool:
        """Read one more id; True when messages were made or the frontier moved."""
        parser, writer = self._parser, self._writer
        notes, tempos, frontier = len(parser.notes), len(parser.tempos), self.frontier_beats
        parser.feed(token_id)
        if parser.now_beats < frontier:
            raise ValueError(f"Position went back from {frontier} to {parser.now_beats} beats")
        if len(parser.tempos) > tempos:
            writer.tempo_change(*parser.tempos[-1])
        if len(parser.notes) > notes:
            writer.note(parser.notes[-1])
        if parser.now_beats > 0.0 or len(parser.notes) > notes:  # a note ends a position's Tempo tokens
            writer.fix_start()
        return len(writer.timed) > self._taken or self.frontier_beats != frontier

    def take(self) -> list[TimedMessage]:
        new = self._writer.timed[self._taken:]
        self._taken = len(self._writer.timed)
        return new

    def finish(self) -> tuple[BarMessages, BarState]:
        return self._writer.finish(self._parser.time_signature, self._parser.length_beats)


@functools.lru_cache(maxsize=16)
def tempo_override(bpm: float) -> TimedMessage:
    """The set_tempo at a bar's line that gives `bpm` (the user's tempo) in place of the bar's own tempos."""
    return TimedMessage(0.0, ORDER_SETUP, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))


def apply_tempo_override(messages: Sequence[TimedMessage], bpm: float) -> tuple[TimedMessage, ...]:
    """`messages` with every set_tempo replaced by `tempo_override(bpm)`."""
    kept = [m for m in messages if m.message.type != "set_tempo"]
    return tuple(sorted([tempo_override(bpm), *kept], key=lambda m: m.sort_key))


def tempo_qpm(message: mido.MetaMessage) -> float:
    """Quarter notes per minute of a set_tempo message."""
    return mido.tempo2bpm(message.tempo)


@dataclass(frozen=True)
class Bar:
    """A finished bar as the generator queues it and the scheduler plays it."""

    seq: int  # generation sequence number (bars thrown away by a switch are generated again)
    messages: BarMessages
    tokens: tuple[int, ...] = ()  # as fed to the model: [conditioning block,] Bar, TimeSig, ...
    conditions: Conditions = Conditions()
    switch_id: int = 0  # the control change this bar was generated under (0 = the opening one)
    requested_s: Optional[float] = None  # on the first bar of a switch: when it was asked for
    generate_s: float = 0.0  # seconds the generator took
    cut_beats: Optional[int] = None  # the rest of bar `seq` from this beat on (a beat switch); None: a whole bar

    @property
    def length_beats(self) -> float:
        return self.messages.length_beats
