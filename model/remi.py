"""The REMI token table shared by the grammar, the streamer's bar reader and the music statistics.

Built once per vocabulary from its public token → id map alone (no tokenizer internals): per token id its
kind and value, every TimeSig's (numerator, denominator), and MidiTok's time grid — `positions_per_beat`
Position steps per denominator beat, and the quarter-note lengths of Position and Duration steps, which
depend on the time signature's denominator. A Duration token `Duration_b.p.r` lasts b + p/r beats.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Token kinds
OTHER, BAR, TIME_SIG, POSITION, TEMPO, PROGRAM, PITCH, PITCH_DRUM, VELOCITY, DURATION, GENRE, MOOD = range(12)
KIND_OF_TYPE = {"Bar": BAR, "TimeSig": TIME_SIG, "Position": POSITION, "Tempo": TEMPO, "Program": PROGRAM,
                "Pitch": PITCH, "PitchDrum": PITCH_DRUM, "Velocity": VELOCITY, "Duration": DURATION,
                "Genre": GENRE, "Mood": MOOD}


class RemiTable:
    """Per token id of `vocab` (anything with a `token_to_id` map): kind, value and time grid.

    `kind` / `value` are numpy arrays (V,) for vectorised use; `kinds` / `values` the same as plain
    lists, faster to index one token at a time. `value` is: Position → index, Duration → Position steps,
    Tempo → qpm, Program/Pitch/PitchDrum/Velocity → the number, anything else 0.
    """

    def __init__(self, vocab):
        id_to_token = _id_to_token(vocab.token_to_id)
        n = len(id_to_token)
        self.kind = np.full(n, OTHER, dtype=np.int8)
        self.value = np.zeros(n, dtype=np.float64)
        self.time_signature: dict[int, tuple[int, int]] = {}  # TimeSig id → (numerator, denominator)
        durations: dict[int, tuple[int, int, int]] = {}  # Duration id → (beats, positions, resolution)
        for token_id, token in enumerate(id_to_token):
            prefix, _, text = token.partition("_")
            kind = KIND_OF_TYPE.get(prefix, OTHER)
            self.kind[token_id] = kind
            if kind in (POSITION, PROGRAM, PITCH, PITCH_DRUM, VELOCITY):
                self.value[token_id] = int(text)
            elif kind == TEMPO:
                self.value[token_id] = float(text)
            elif kind == TIME_SIG:
                numerator, denominator = text.split("/")
                self.time_signature[token_id] = (int(numerator), int(denominator))
            elif kind == DURATION:
                beats, positions, resolution = (int(x) for x in text.split("."))
                durations[token_id] = (beats, positions, resolution)
        if not durations or not self.time_signature:
            raise ValueError("not a REMI vocabulary with Duration and TimeSig tokens")
        # MidiTok's grid: the finest Duration resolution is the number of Positions per beat.
        self.positions_per_beat = max(resolution for _, _, resolution in durations.values())
        steps = self.positions_per_beat
        for token_id, (beats, positions, resolution) in durations.items():
            self.value[token_id] = beats * steps + positions * steps / resolution
        # MidiTok's ticks: per denominator beat, the finest denominator's beat gets `steps` ticks.
        denominators = sorted({denominator for _, denominator in self.time_signature.values()})
        finest = max(denominators)
        ticks_per_quarter = steps * finest / 4
        self.position_beats: dict[int, float] = {}  # denominator → quarter notes per Position step
        self.duration_beats: dict[int, dict[int, float]] = {}  # denominator → Duration id → quarter notes
        for denominator in denominators:
            ticks_per_beat = steps * (finest // denominator)
            self.position_beats[denominator] = (ticks_per_beat // steps) / ticks_per_quarter
            self.duration_beats[denominator] = {
                token_id: (beats * resolution + positions) * ticks_per_beat // resolution / ticks_per_quarter
                for token_id, (beats, positions, resolution) in durations.items()}
        self.kinds: list[int] = self.kind.tolist()
        self.values: list[float] = self.value.tolist()

    @classmethod
    def from_vocab(cls, vocab) -> "RemiTable":
        return cls(vocab)

    def __len__(self) -> int:
        return len(self.kinds)

    def positions_per_bar(self, token_id: int) -> int:
        """Position slots in a bar of this TimeSig token (6/8 → 6 × positions_per_beat)."""
        numerator, _ = self.time_signature[token_id]
        return numerator * self.positions_per_beat

    def bar_beats(self, token_id: int) -> float | None:
        """Quarter-note beats in a bar of this TimeSig token (6/8 → 3.0); None for any other token."""
        signature = self.time_signature.get(token_id)
        return signature[0] * 4 / signature[1] if signature else None


def _id_to_token(token_to_id: dict[str, int]) -> Sequence[str]:
    id_to_token = [""] * len(token_to_id)
    for token, token_id in token_to_id.items():
        id_to_token[token_id] = token
    return id_to_token
