"""A genre/mood switch, from the control to the model, top to bottom. The decisions are the functions here;
the actors that carry them out are named at each step.

1. Control in. The TUI, OSC, a MIDI controller, a cue file or the API call `Engine.set_controls`, which
   validates the new `Controls`.
2. Which bar it lands on (`landing_seq`). The next bar line if the generator can write the start of that
   bar before the line and the rest before it ends (`fits`, from the recent bars' timings), else the one
   after; with `switch_at` phrase:N the first bar at or after that whose playback number is a multiple of N.
   `at_bar` pins it instead (renders and cues, where no underrun shifts the numbers).
3. What is thrown away. `Generator.request` puts the new controls in the generator's schedule from that
   bar on, and `BarQueue.switch_from` drops the queued bars from there (moving the switch on if the scheduler
   has started that bar meanwhile) and marks a rollback. The generator drops the bar it is writing if that
   bar is one of them, and rolls its cache, grammar and RNG back to the last bar kept
   (`Generator._rollback_to`), so the music depends only on the seed and on which controls govern which bar.
4. What the model is fed (`bar_start`). The new conditioning block and `Bar`; before it, at most
   `switch_context_bars` bars of the old music (0: none, the switch starts afresh); guidance's negative row
   reads the old block when `switch_negative` is "old"; the first `switch_boost_bars` bars are guided with
   `switch_guidance_w` (`guidance_w`).
5. News. `SwitchPending` when it is asked for (engine), `SwitchApplied` at its bar line and `SwitchSounded`
   at its first note (scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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
