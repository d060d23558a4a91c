"""Training windows from a built dataset: bar-aligned, conditioned, sometimes spliced, reproducible.

`WindowSampler(dataset_dir, split, block_size, batch_size, splice_prob, cond_dropout, seed, weights=None,
alpha=0.5, restate_tempo=True)`; `next_batch() -> (x, y)`, LongTensors (B, T) with T = block_size,
y[t] = x[t+1]; targets that are condition tokens (unpredictable switches) or padding are -1 (use
`ignore_index=-1`); x pads with PAD. `state_dict()` / `load_state_dict()` resume the exact stream.

A window opens with a conditioning block [Genre_g, Mood_m] and a piece from one of its bar lines; when the
window starts after the piece's first bar the tempo in force is restated (Position_0, Tempo_x) after the
Bar/TimeSig tokens. With probability `splice_prob` the piece is cut at a bar line in the middle half of
the window and another piece with different labels follows, its own block right before its Bar token:
the model learns to follow a live switch. A piece that ends before the window does is followed the same
way. Each block token becomes `any` with probability `cond_dropout`, independently (classifier-free
guidance). Pieces are drawn by (genre, mood) cell with probability ∝ tokens^alpha, then by source within
the cell ∝ tokens^alpha, then by length, times optional `weights` {"genre"|"mood"|"source": {name: w}};
`sampling_mix()` reports the resulting mix.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import MoodstreamError
from training.dataset import TokenDataset

log = logging.getLogger(__name__)

IGNORE = -1
WEIGHT_KEYS = ("genre", "mood", "source")


@dataclass(frozen=True)
class Segment:
    """One piece's part of a window: which piece, from which bar, where its block starts in the window."""

    piece: int  # index into the sampler's pieces
    start_bar: int
    block_at: int  # window position of its [Genre, Mood] block (its Bar follows, after any restated tempo)
    genre: str  # the labels (before dropout)
    mood: str


def _check_weights(weights: dict | None) -> dict:
    weights = weights or {}
    for key, table in weights.items():
        if key not in WEIGHT_KEYS:
            raise MoodstreamError(f"sampler weights: unknown key {key!r}; use {', '.join(WEIGHT_KEYS)}")
        for name, w in table.items():
            if not (isinstance(w, (int, float)) and w >= 0):
                raise MoodstreamError(f"sampler weights: {key} {name!r} needs a number >= 0, got {w!r}")
    return weights


def piece_probabilities(rows: list[dict], alpha: float = 0.5, weights: dict | None = None) -> np.ndarray:
    """P(draw piece i): cell (genre, mood) ∝ tokens^alpha, source in cell ∝ tokens^alpha, piece ∝ length;
    `weights` multiply genres and moods (cell mass) and sources (their tokens)."""
    weights = _check_weights(weights)
    if not rows:
        raise MoodstreamError("no pieces to sample from")
    source_tokens: dict = defaultdict(int)
    for r in rows:
        source_tokens[(r["genre"], r["mood"], r["source"])] += r["length"]

    def w(key: str, name: str) -> float:
        return float(weights.get(key, {}).get(name, 1.0))

    # a source weight scales that source's tokens, so it moves both its share in a cell and the cell's mass
    weighted = {k: t * w("source", k[2]) for k, t in source_tokens.items()}
    cell_mass: dict = defaultdict(float)
    source_mass: dict = defaultdict(float)
    for (g, m, s), t in weighted.items():
        cell_mass[(g, m)] += t
        source_mass[(g, m)] += t ** alpha
    cell_p = {c: t ** alpha * w("genre", c[0]) * w("mood", c[1]) for c, t in cell_mass.items()}
    total = sum(cell_p.values())
    if total <= 0:
        raise MoodstreamError("sampler weights leave nothing to sample")
    probs = np.zeros(len(rows))
    for i, r in enumerate(rows):
        g, m, s = r["genre"], r["mood"], r["source"]
        if weighted[(g, m, s)] <= 0:
            continue
        p_source = weighted[(g, m, s)] ** alpha / source_mass[(g, m)]
        probs[i] = cell_p[(g, m)] / total * p_source * r["length"] / source_tokens[(g, m, s)]
    if probs.sum() <= 0:
        raise MoodstreamError("sampler weights leave nothing to sample")
    return probs / probs.sum()


def sampling_mix(dataset_dir: str | Path, split: str = "train", alpha: float = 0.5,
                 weights: dict | None = None) -> dict:
    """Share of window starts per genre, mood, source and mood origin under these weights."""
    rows = TokenDataset(dataset_dir).pieces(split)
    if not rows:
        raise MoodstreamError(f"{dataset_dir}: no pieces in split {split!r}")
    probs = piece_probabilities(rows, alpha, weights)
    mix: dict = {k: defaultdict(float) for k in ("genre", "mood", "source", "mood_origin")}
    for r, p in zip(rows, probs):
        for key in mix:
            mix[key][r[key]] += float(p)
    return {k: {name: round(v, 4) for name, v in sorted(table.items())} for k, table in mix.items()}


def restate_tempo(tokens: list[int], tempo: int, position0: int, is_tempo: np.ndarray, is_timesig: np.ndarray
                  ) -> list[int]:
    """`tokens` (from a `Bar`) with `tempo` stated at the bar's start, `Bar TimeSig Position_0 Tempo`, unless a
    Tempo stands there already: a bar taken out of its piece keeps the tempo in force (a bar decoded alone
    forgets it). `is_tempo`, `is_timesig`: (V,) bool masks of the vocabulary."""
    k = 2 if len(tokens) > 1 and is_timesig[tokens[1]] else 1  # after Bar (and TimeSig)
    if k < len(tokens) and tokens[k] == position0:
        if k + 1 < len(tokens) and is_tempo[tokens[k + 1]]:
            return tokens
        return tokens[:k + 1] + [tempo] + tokens[k + 1:]
    return tokens[:k] + [position0, tempo] + tokens[k:]


class WindowSampler:
    def __init__(self, dataset_dir: str | Path, split: str, block_size: int, batch_size: int,
                 splice_prob: float = 0.0, cond_dropout: float = 0.0, seed: int = 0, weights: dict | None = None,
                 alpha: float = 0.5, restate_tempo: bool = True):
        if block_size < 8:
            raise MoodstreamError(f"block_size must be >= 8 tokens, got {block_size}")
        if batch_size < 1:
            raise MoodstreamError(f"batch_size must be >= 1, got {batch_size}")
        for name, p in (("splice_prob", splice_prob), ("cond_dropout", cond_dropout)):
            if not 0.0 <= p <= 1.0:
                raise MoodstreamError(f"{name} must be within [0, 1], got {p}")
        if alpha < 0:
            raise MoodstreamError(f"alpha must be >= 0, got {alpha}")
        self.data = TokenDataset(dataset_dir)
        self.rows = self.data.pieces(split)
        if not self.rows:
            raise MoodstreamError(f"{dataset_dir}: no pieces in split {split!r}; rebuild with that split's sources")
        self.split, self.block_size, self.batch_size = split, block_size, batch_size
        self.splice_prob, self.cond_dropout, self.restate_tempo = splice_prob, cond_dropout, restate_tempo
        self.seed = seed
        vocab = self.data.vocab
        self.vocab = vocab
        self.pad_id = vocab.pad_id
        self.genre_ids, self.mood_ids = vocab.genre_ids, vocab.mood_ids
        self.any_genre, self.any_mood = vocab.genre_ids["any"], vocab.mood_ids["any"]
        for r in self.rows:
            if r["genre"] not in self.genre_ids or r["mood"] not in self.mood_ids:
                raise MoodstreamError(f"{dataset_dir}: piece {r['piece']} has labels {r['genre']}/{r['mood']} "
                                      "that its tokenizer.json does not know; rebuild the dataset")
        self.is_condition = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_condition[list(self.genre_ids.values()) + list(self.mood_ids.values())] = True
        self.is_tempo = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_tempo[[i for t, i in vocab.token_to_id.items() if t.startswith("Tempo_")]] = True
        self.position0 = vocab.token_to_id.get("Position_0")
        self.is_timesig = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_timesig[[i for t, i in vocab.token_to_id.items() if t.startswith("TimeSig_")]] = True
        self.probs = piece_probabilities(self.rows, alpha, weights)
        self.cdf = np.cumsum(self.probs)
        self.labels = [(r["genre"], r["mood"]) for r in self.rows]
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.batches = 0

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "batches": self.batches, "seed": self.seed,
                "split": self.split, "n_pieces": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n_pieces") not in (None, len(self.rows)):
            raise MoodstreamError(f"sampler state is for a dataset with {state['n_pieces']} {self.split} pieces, "
                                  f"this one has {len(self.rows)}; resume with the dataset you trained on")
        self.rng.bit_generator.state = state["rng"]
        self.batches = int(state.get("batches", 0))

    def mix(self) -> dict:
        out: dict = {k: defaultdict(float) for k in ("genre", "mood", "source", "mood_origin")}
        for r, p in zip(self.rows, self.probs):
            for key in out:
                out[key][r[key]] += float(p)
        return {k: dict(v) for k, v in out.items()}

    # ---- windows ----------------------------------------------------------------------------------
    def _draw_piece(self, avoid: tuple[str, str] | None = None) -> int:
        for _ in range(64):
            i = int(np.searchsorted(self.cdf, self.rng.random() * self.cdf[-1], side="right"))
            i = min(i, len(self.rows) - 1)
            if avoid is None or self.labels[i] != avoid:
                return i
        return i  # every piece shares the labels (tiny datasets): splice anyway

    def _block(self, genre: str, mood: str) -> list[int]:
        g, m = self.genre_ids[genre], self.mood_ids[mood]
        if self.cond_dropout > 0:
            if self.rng.random() < self.cond_dropout:
                g = self.any_genre
            if self.rng.random() < self.cond_dropout:
                m = self.any_mood
        return [g, m]

    def _piece_from_bar(self, i: int, bar: int, max_tokens: int) -> list[int]:
        """Up to `max_tokens` (+2) tokens of piece i from bar `bar`, the tempo in force restated when bar > 0."""
        row = self.rows[i]
        tokens = self.data.tokens(row)
        start = row["bars"][bar]
        out = tokens[start:start + max_tokens].astype(np.int64).tolist()
        if not self.restate_tempo or bar == 0:
            return out
        before = np.flatnonzero(self.is_tempo[tokens[:start]])
        if before.size == 0:
            return out
        return restate_tempo(out, int(tokens[before[-1]]), self.position0, self.is_tempo, self.is_timesig)

    def sample_window(self) -> tuple[np.ndarray, list[Segment]]:
        """One window of block_size + 1 tokens (x and its shifted targets) and the pieces it holds."""
        need = self.block_size + 1
        seq: list[int] = []
        segments: list[Segment] = []
        splice = self.rng.random() < self.splice_prob
        splice_at = int(self.rng.integers(need // 4, max(need * 3 // 4, need // 4 + 1))) if splice else need
        i = self._draw_piece()
        while len(seq) < need:
            row = self.rows[i]
            n_bars = len(row["bars"])
            bar = int(self.rng.integers(0, n_bars))
            genre, mood = self.labels[i]
            segments.append(Segment(i, bar, len(seq), genre, mood))
            seq += self._block(genre, mood)
            part = self._piece_from_bar(i, bar, need - len(seq))
            if splice and len(segments) == 1:
                # cut at the last bar line at or before splice_at (else the first one that fits the window)
                shift = len(part) - min(row["length"] - row["bars"][bar], need - len(seq))  # restated tempo
                cuts = [len(seq) + b - row["bars"][bar] + shift for b in row["bars"][bar + 1:]]
                cuts = [c for c in cuts if c < need]
                if cuts:
                    early = [c for c in cuts if c <= splice_at]
                    part = part[:(early[-1] if early else cuts[0]) - len(seq)]
            seq += part
            i = self._draw_piece(avoid=(genre, mood))
        return np.asarray(seq[:need], dtype=np.int64), segments

    def next_batch(self):
        """(x, y): LongTensors (batch_size, block_size); y = next token, -1 where not to be learned."""
        import torch

        windows = [self.sample_window()[0] for _ in range(self.batch_size)]
        batch = np.full((self.batch_size, self.block_size + 1), self.pad_id, dtype=np.int64)
        for b, w in enumerate(windows):
            batch[b, :len(w)] = w
        x = batch[:, :-1].copy()
        y = batch[:, 1:].copy()
        y[self.is_condition[y]] = IGNORE
        for b, w in enumerate(windows):
            if len(w) < self.block_size + 1:
                y[b, max(len(w) - 1, 0):] = IGNORE
        self.batches += 1
        return torch.from_numpy(x), torch.from_numpy(y)
