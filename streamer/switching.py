"""A genre/mood switch, from the control to the model, top to bottom. The decisions are the functions here;
the actors that carry them out are named at each step.

1. Control in. The TUI, OSC, a MIDI controller, a cue file or the API call `Engine.set_controls`, which
   validates the new `Controls`.
2. Which bar it lands on (`landing_seq`). The next bar line if the generator can write the start of that
   bar before the line and the rest before it ends (`fits`, from the recent bars' timings), else the one
   after; with `switch_at` phrase:N the first bar at or after that whose playback number is a multiple of N.
   `at_bar` pins it instead (renders and cues, where no underrun shifts the numbers).
   With `switch_at` beat (live, once playback runs) it lands inside the bar playing: at its first whole beat
   the generator can reach in time (`beat_landing`), else as a bar switch.
3. What is thrown away. `Generator.request` puts the new controls in the generator's schedule from that
   bar on, and `BarQueue.switch_from` drops the queued bars from there (moving the switch on if the scheduler
   has started that bar meanwhile) and marks a rollback. The generator drops the bar it is writing if that
   bar is one of them, and rolls its cache, grammar and RNG back to the last bar kept
   (`Generator._rollback_to`), so the music depends only on the seed and on which controls govern which bar.
   A beat switch (`Cut`: `BarQueue.cut_at`) also rolls back the bar playing: the generator writes the rest of
   it again from the cut, and the scheduler drops the old bar's messages from the cut on, ending every old
   note there (`cut_events`).
4. What the model is fed (`bar_start`). The new conditioning block and `Bar`; before it, at most
   `switch_context_bars` bars of the old music (0: none, the switch starts afresh); guidance's negative row
   reads the old block when `switch_negative` is "old"; the first `switch_boost_bars` bars are guided with
   `switch_guidance_w` (`guidance_w`). The rest of a cut bar opens the same way, then its own TimeSig (forced)
   and Positions from the cut on only (at least one: never empty), with no Tempo but the one the bar had there
   (`fragment_start`).
5. News. `SwitchPending` when it is asked for (engine; `at_beat` for a beat switch), `SwitchApplied` at its
   bar line (or its cut) and `SwitchSounded` at its first note (scheduler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from model.remi import TEMPO, TIME_SIG, RemiTable
from model.vocab import Conditions
from streamer.controls import SwitchAt


# ---- 2. which bar it lands on ------------------------------------------------------------------------------
def fits(left_s: float, head_s: float, bar_s: float, bar_play_s: float, margin: float) -> bool:
    """Whether a switch asked for `left_s` before the next bar line can sound from it: the generator must
    write the start of that bar (`head_s`, up to its first note) before the line, and the whole bar plus the
    start of the one after (`bar_s + head_s`) before that bar ends (`bar_play_s` later, taking the new bar to
    be as long as the one playing), else the bar after would be an underrun. Each time × `margin`."""
    return left_s >= margin * head_s and left_s + bar_play_s >= margin * (bar_s + head_s)


def landing_seq(earliest_seq: int, bar_of_seq: Callable[[int], int], switch_at: SwitchAt) -> int:
    """The generation bar a switch starts at: the first at or after `earliest_seq` (the first it can make)
    whose playback bar number (`bar_of_seq`) is where `switch_at` lets switches land."""
    at = bar_of_seq(earliest_seq)
    return earliest_seq + switch_at.landing(at) - at


def beat_landing(now_beats: float, length_beats: float, beat_s: float, head_s: float, bar_s: float,
                 margin: float) -> Optional[int]:
    """Where a beat switch asked for `now_beats` after the playing bar's line lands: the first whole beat p
    after now (1 ≤ p < `length_beats`) by which the generator can write the start of the rest of the bar
    (`head_s`), and the rest of it (its share of `bar_s`) plus the start of the next bar before the bar
    ends; None when no beat is left in time (the switch goes to the next bar line). `beat_s`: seconds a
    beat plays. Each time × `margin`, as in `fits`."""
    for beat in range(max(1, math.floor(now_beats) + 1), math.ceil(length_beats)):
        left_s = (beat - now_beats) * beat_s
        rest_beats = length_beats - beat
        if left_s >= margin * head_s and \
                left_s + rest_beats * beat_s >= margin * (bar_s * rest_beats / length_beats + head_s):
            return beat
    return None


# ---- 3. what is thrown away ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cut:
    """A beat switch: bar `seq`, which plays, is cut `from_beats` (a whole beat) after its line; the rest
    of it is written again under the new conditions."""

    seq: int
    from_beats: int


def cut_events(events: Sequence[tuple], cut_beat: float) -> list[tuple]:
    """The scheduler's events `(beat, order, n, msg, bar_number)` with the music cut at `cut_beat`: those
    before it stay; from it on every note_off moves to it (each old note sounding then ends there, before
    any new note there: note-offs sort first) and the rest goes (the old notes, tempo and program changes).
    A note_off of a note that never started is skipped by the scheduler's count (`SoundingNotes`)."""
    kept = []
    for event in events:
        if event[0] < cut_beat:
            kept.append(event)
        elif event[3].type == "note_off":
            kept.append((cut_beat, *event[1:]))
    return kept


# ---- 4. what the model is fed --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BarStart:
    """How the generator opens a bar: feed `prefix` (conditioning block if any, then `Bar`); with `afresh`,
    rebuild the context as at most `context_bars` old bars before it; `negative` is what guidance's
    unconditioned row reads instead of its own block (None: the null block)."""

    prefix: list[int]
    afresh: bool
    context_bars: Optional[int]
    negative: Optional[list[int]]


def bar_start(vocab, previous: Optional[Conditions], conditions: Conditions, *, every_bar: bool,
              empty_context: bool, guided: bool, context_bars: Optional[int], negative: str) -> BarStart:
    """The start of a bar under `conditions` after a bar written under `previous` (None: the first bar).
    A block goes first when the conditions change, when the context is empty, or before every bar for a model
    trained so (`every_bar`). On a switch the context keeps `context_bars` old bars (None: all that fit) and,
    with `negative` "old" and guidance on, the negative row reads the old block: old + w·(new − old)."""
    switched = previous is not None and previous != conditions
    block = vocab.condition_ids(conditions) if every_bar or previous != conditions or empty_context else []
    prefix = block + [vocab.bar_id]
    old_row = None
    if switched and guided and negative == "old":
        old_row = vocab.condition_ids(previous) + [vocab.bar_id]
    return BarStart(prefix, afresh=switched and context_bars is not None, context_bars=context_bars,
                    negative=old_row)


def guidance_w(seq: int, first_seq_of_switch: int, controls_w: float, boost_w: Optional[float],
               boost_bars: int) -> float:
    """The guidance weight for bar `seq` of a switch that began at `first_seq_of_switch`: `boost_w` for its
    first `boost_bars` bars (None: no boost), else the controls' weight."""
    if boost_w is None or seq - first_seq_of_switch >= boost_bars:
        return controls_w
    return boost_w


@dataclass(frozen=True)
class FragmentStart:
    """How the rest of a cut bar opens after its `BarStart.prefix`: the bar's own `timesig_id` (forced),
    then Positions from `first_position` on only; `tempo_id` is the one Tempo token allowed (the bar's at the
    cut, None: none), `tempo_qpm` the tempo in force at the cut (None: the one carried into the bar)."""

    timesig_id: int
    first_position: int
    tempo_id: Optional[int]
    tempo_qpm: Optional[float]


def fragment_start(table: RemiTable, bar_tokens: Sequence[int], from_beats: float) -> Optional[FragmentStart]:
    """The start of the rest of the bar `bar_tokens` (as the generator wrote it) from `from_beats` on; None
    when the bar has no TimeSig or the cut is not on its Position grid."""
    from streamer.bars import parse_bar

    timesig = next((t for t in bar_tokens if 0 <= t < len(table) and table.kinds[t] == TIME_SIG), None)
    if timesig is None:
        return None
    parsed = parse_bar(table, bar_tokens)
    step = table.position_beats[parsed.time_signature[1]]
    first = from_beats / step
    if abs(first - round(first)) > 1e-6 or not 0 < from_beats < parsed.length_beats:
        return None
    before = [qpm for offset, qpm in parsed.tempos if offset < from_beats]
    qpm = before[-1] if before else None
    tempo_id = None
    if qpm is not None:
        tempo_id = next((t for t, kind in enumerate(table.kinds) if kind == TEMPO and table.values[t] == qpm), None)
    return FragmentStart(timesig, int(round(first)), tempo_id, qpm)
