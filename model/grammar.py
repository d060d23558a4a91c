"""Which token may legally come next in a moodstream REMI stream: a small state machine over ids.

The stream, as MidiTok writes it for `Vocab.create()` and as we generate it:
    stream  = block bar+          block = Genre_* Mood_*          (a block only right before a Bar)
    bar     = Bar TimeSig_* step*            step = Position_p [Tempo_*] note*
    note    = Program_q Pitch_* Velocity_* Duration_*      (Program_-1 = drums: PitchDrum_* instead)
with positions strictly increasing inside a bar and below its length (numerator × positions per beat),
at most `max_notes_per_position` notes per position, and never PAD/BOS/EOS/MASK. Every bar sampled
under this mask decodes with MidiTok to exactly the notes its tokens spell (tests/test_grammar.py).

States are immutable and cheap (one small tuple per token); `allowed()` returns a precomputed,
shared bool tensor (V,) — never empty, never to be modified by the caller.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from model.remi import (BAR, DURATION, GENRE, KIND_OF_TYPE, MOOD, PITCH, PITCH_DRUM, POSITION, PROGRAM, TEMPO,
                        TIME_SIG, VELOCITY, RemiTable)

# State kinds: what was just read.
START, AFTER_GENRE, AFTER_MOOD, AFTER_BAR, AFTER_TIMESIG, AFTER_POSITION, AFTER_TEMPO, AFTER_PROGRAM, \
    AFTER_DRUM_PROGRAM, AFTER_PITCH, AFTER_VELOCITY, AFTER_DURATION = range(12)
KIND_NAMES = ("start", "after Genre", "after Mood", "after Bar", "after TimeSig", "after Position",
              "after Tempo", "after Program", "after Program_-1", "after Pitch", "after Velocity",
              "after Duration")
# Kinds where a bar may end: a Bar or a conditioning block may come next.
_BOUNDARY = frozenset({START, AFTER_TIMESIG, AFTER_TEMPO, AFTER_DURATION})
# Kinds whose mask depends on the position and the bar length.
_POSITIONED = frozenset({AFTER_TIMESIG, AFTER_TEMPO, AFTER_DURATION})

DEFAULT_MAX_NOTES_PER_POSITION = 48  # real data tops out near 30; the cap only guarantees bars end


class GrammarError(ValueError):
    """A token that may not come next (a caller bug: sampled tokens always obey the mask)."""


class GrammarState(NamedTuple):
    grammar: "Grammar"
    kind: int  # what was just read (one of the kinds above)
    position: int = -1  # last Position in the current bar; -1 = none yet
    bar_positions: int = 0  # positions in the current bar, from its TimeSig
    notes_here: int = 0  # notes at the current position

    def allowed(self) -> torch.Tensor:
        """(V,) bool: True for every token that may come next. Shared: do not modify it."""
        return self.grammar.mask(self)

    def advance(self, token_id: int) -> "GrammarState":
        """The state after `token_id`; raises GrammarError if it may not come next. Never mutates self."""
        return self.grammar.advance(self, token_id)

    def advance_all(self, ids: Sequence[int]) -> "GrammarState":
        state = self
        for token_id in ids:
            state = self.grammar.advance(state, token_id)
        return state

    def from_position(self, position: int) -> "GrammarState":
        """Right after a TimeSig: the same state with every Position before `position` ruled out (the rest of
        a bar cut at that position: see `streamer.switching.fragment_start`)."""
        if self.kind != AFTER_TIMESIG or not 0 <= position < self.bar_positions:
            raise GrammarError(f"a bar can start from position {position} only right after its TimeSig, within "
                               f"its {self.bar_positions} positions ({self!r})")
        return self._replace(position=position - 1)

    @property
    def at_bar_boundary(self) -> bool:
        """True when the current bar may end here: a Bar, or a conditioning block then a Bar, may come
        next (the streamer inserts its block at such a state). Also true at the very start."""
        return self.kind in _BOUNDARY

    @property
    def in_condition_block(self) -> bool:
        return self.kind in (AFTER_GENRE, AFTER_MOOD)

    def __repr__(self) -> str:
        return (f"GrammarState({KIND_NAMES[self.kind]}, position={self.position}, "
                f"bar_positions={self.bar_positions}, notes_here={self.notes_here})")


class Grammar:
    """The REMI state machine for one vocabulary.

    `allow_sampled_conditions=False` keeps Genre_/Mood_ tokens out of `allowed()` (the user, not the
    model, decides when the conditions change); `advance` still accepts a block at a bar boundary.
    """

    def __init__(self, vocab, allow_sampled_conditions: bool = True,
                 max_notes_per_position: int = DEFAULT_MAX_NOTES_PER_POSITION):
        if max_notes_per_position < 1:
            raise ValueError(f"max_notes_per_position = {max_notes_per_position} must be ≥ 1")
        self.vocab = vocab
        self.vocab_size = vocab.vocab_size
        self.allow_sampled_conditions = allow_sampled_conditions
        self.max_notes_per_position = max_notes_per_position
        table = RemiTable(vocab)
        self.token_class: list[int] = list(table.kinds)
        # Position → index, Program → program, TimeSig → positions per bar, anything else 0
        self.token_value: list[int] = [
            table.positions_per_bar(token_id) if cls == TIME_SIG else
            int(table.values[token_id]) if cls in (POSITION, PROGRAM) else 0
            for token_id, cls in enumerate(table.kinds)]
        self.drum_program_id = vocab.token_to_id["Program_-1"]
        classes = torch.tensor(self.token_class)
        self._class_masks = {cls: classes == cls for cls in KIND_OF_TYPE.values()}
        self._position_ids = [i for i, c in enumerate(self.token_class) if c == POSITION]
        self._fixed = self._fixed_masks()
        self._positioned: dict[tuple[int, int, int, bool], torch.Tensor] = {}

    def _fixed_masks(self) -> dict[int, torch.Tensor]:
        m = self._class_masks
        masks = {
            START: m[GENRE],
            AFTER_GENRE: m[MOOD],
            AFTER_MOOD: m[BAR],
            AFTER_BAR: m[TIME_SIG],
            AFTER_POSITION: m[PROGRAM] | m[TEMPO],
            AFTER_PROGRAM: m[PITCH],
            AFTER_DRUM_PROGRAM: m[PITCH_DRUM],
            AFTER_PITCH: m[VELOCITY],
            AFTER_VELOCITY: m[DURATION],
        }
        return {kind: mask.clone() for kind, mask in masks.items()}

    # ---- the two hot calls ------------------------------------------------------------------------
    def mask(self, state: GrammarState) -> torch.Tensor:
        kind = state.kind
        if kind not in _POSITIONED:
            return self._fixed[kind]
        full = kind == AFTER_DURATION and state.notes_here >= self.max_notes_per_position
        key = (kind, state.position + 1, state.bar_positions, full)
        mask = self._positioned.get(key)
        if mask is None:
            mask = self._positioned[key] = self._build_positioned(*key)
        return mask

    def advance(self, state: GrammarState, token_id: int) -> GrammarState:
        if not 0 <= token_id < self.vocab_size:  # a negative id would silently index from the end
            raise GrammarError(f"token id {token_id} is outside the vocabulary (0 to {self.vocab_size - 1})")
        cls, kind = self.token_class[token_id], state.kind
        position, bar_positions, notes_here = state.position, state.bar_positions, state.notes_here
        nxt = -1
        if cls == PROGRAM:
            if kind == AFTER_POSITION or kind == AFTER_TEMPO or (
                    kind == AFTER_DURATION and notes_here < self.max_notes_per_position):
                nxt = AFTER_DRUM_PROGRAM if token_id == self.drum_program_id else AFTER_PROGRAM
        elif cls == PITCH:
            nxt = AFTER_PITCH if kind == AFTER_PROGRAM else -1
        elif cls == PITCH_DRUM:
            nxt = AFTER_PITCH if kind == AFTER_DRUM_PROGRAM else -1
        elif cls == VELOCITY:
            nxt = AFTER_VELOCITY if kind == AFTER_PITCH else -1
        elif cls == DURATION:
            if kind == AFTER_VELOCITY:
                nxt, notes_here = AFTER_DURATION, notes_here + 1
        elif cls == POSITION:
            value = self.token_value[token_id]
            if kind in _POSITIONED and position < value < bar_positions:
                nxt, position, notes_here = AFTER_POSITION, value, 0
        elif cls == TEMPO:
            nxt = AFTER_TEMPO if kind == AFTER_POSITION else -1
        elif cls == BAR:
            if kind == AFTER_MOOD or (kind in _BOUNDARY and kind != START):
                nxt, position, bar_positions, notes_here = AFTER_BAR, -1, 0, 0
        elif cls == TIME_SIG:
            if kind == AFTER_BAR:
                nxt, bar_positions = AFTER_TIMESIG, self.token_value[token_id]
        elif cls == GENRE:
            nxt = AFTER_GENRE if kind in _BOUNDARY else -1
        elif cls == MOOD:
            nxt = AFTER_MOOD if kind == AFTER_GENRE else -1
        if nxt < 0:
            raise GrammarError(f"token {self.vocab.id_to_token[token_id]!r} may not come {KIND_NAMES[kind]} "
                               f"({state!r})")
        return GrammarState(self, nxt, position, bar_positions, notes_here)

    # ---- construction -----------------------------------------------------------------------------
    def start(self) -> GrammarState:
        """The state at the start of a stream: a conditioning block comes first."""
        return GrammarState(self, START)

    def state_after(self, ids: Sequence[int]) -> GrammarState:
        """The state after a whole stream `ids` (which must open with a conditioning block)."""
        return self.start().advance_all(ids)

    def _build_positioned(self, kind: int, first_position: int, bar_positions: int, full: bool) -> torch.Tensor:
        m = self._class_masks
        mask = m[BAR].clone()
        if self.allow_sampled_conditions:
            mask |= m[GENRE]
        if kind in (AFTER_TEMPO, AFTER_DURATION) and not full:
            mask |= m[PROGRAM]
        for token_id in self._position_ids:
            if first_position <= self.token_value[token_id] < bar_positions:
                mask[token_id] = True
        return mask

    def check(self, ids: Sequence[int], state: GrammarState | None = None) -> GrammarState:
        """Advance through `ids` (from `state`, default the start) and return the final state; raises
        GrammarError naming the first illegal token and its index."""
        state = state or self.start()
        for index, token_id in enumerate(ids):
            try:
                state = state.advance(token_id)
            except GrammarError as err:
                raise GrammarError(f"at token {index}: {err}") from None
        return state
