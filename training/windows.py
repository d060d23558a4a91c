"""Training windows from a built dataset: bar-aligned, conditioned, with switches, reproducible.

`WindowSampler(dataset_dir, split, block_size, batch_size, splice_prob, cond_dropout, seed, weights=None,
alpha=0.5, restate_tempo=True, bar_blocks=False, max_switches=1, one_axis_share=0.0, joint_dropout=0.0,
generated_cap=None, window_moods=False)`; `next_batch() -> (x, y)`, LongTensors (B, T) with T = block_size,
y[t] = x[t+1]; targets that are condition tokens or padding are -1 (use `ignore_index=-1`); x pads with PAD.
`state_dict()` / `load_state_dict()` resume the exact stream.

A window opens with a conditioning block [Genre_g, Mood_m] and a piece from one of its bar lines; when the
window starts after the piece's first bar the tempo in force is restated (Position_0, Tempo_x) after the
Bar/TimeSig tokens. With `bar_blocks` the block stands before every `Bar` (bar-level conditions, as the
stream then feeds them), and a bar's last token learns to predict `Bar` where the next block begins.
With probability `splice_prob` a window switches 1…`max_switches` times: the piece is cut at a bar line
and another piece follows under its own block; a share `one_axis_share` of switches changes one axis only
(genre or mood), the others both. A piece that ends before the window does is followed the same way.
Condition dropout (classifier-free guidance) makes a label the null condition (`Vocab.null_ids`): each
axis with probability `cond_dropout`, both with `joint_dropout`; per block, or per window with
`bar_blocks` (the unconditioned row reads null at every bar). Pieces are drawn by (genre, mood) cell with
probability ∝ tokens^alpha, then by source within the cell ∝ tokens^alpha, then by length, times optional
`weights` {"genre"|"mood"|"source": {name: w}}; `generated_cap` bounds the share of windows drawn from
generated arrangements (`GENERATED_SOURCES`). `sampling_mix()` reports the resulting mix.
With `window_moods` a piece whose mood is derived (not human) is labelled by the music of its part of the
window instead of the whole piece (`training.labels.notes_evidence`, the same rules): a song's minor
bridge or quiet intro reads as what it sounds like. Parts with too few notes to judge keep the piece's mood.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from model.errors import MoodstreamError
from model.remi import RemiTable
from training.dataset import TokenDataset
from training.labels import derive_mood, notes_evidence
from training.musicstats import parse_notes

log = logging.getLogger(__name__)

IGNORE = -1
WEIGHT_KEYS = ("genre", "mood", "source")
GENERATED_SOURCES = ("mma",)  # arrangements the build generates from chord charts
DEFAULT_GENERATED_CAP = 0.30  # the training default: at most this share of windows from generated music


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


def piece_probabilities(rows: list[dict], alpha: float = 0.5, weights: dict | None = None,
                        generated_cap: float | None = None) -> np.ndarray:
    """P(draw piece i): cell (genre, mood) ∝ tokens^alpha, source in cell ∝ tokens^alpha, piece ∝ length;
    `weights` multiply genres and moods (cell mass) and sources (their tokens); `generated_cap`: at most
    this share for the pieces of `GENERATED_SOURCES` (scaled down together, the rest scaled up)."""
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
    probs /= probs.sum()
    if generated_cap is not None:
        generated = np.array([r["source"] in GENERATED_SOURCES for r in rows])
        share = probs[generated].sum()
        if share > generated_cap and share < 1.0:
            probs[generated] *= generated_cap / share
            probs[~generated] *= (1.0 - generated_cap) / (1.0 - share)
    return probs


def sampling_mix(dataset_dir: str | Path, split: str = "train", alpha: float = 0.5,
                 weights: dict | None = None, generated_cap: float | None = DEFAULT_GENERATED_CAP) -> dict:
    """Share of window starts per genre, mood, source and mood origin under these weights."""
    rows = TokenDataset(dataset_dir).pieces(split)
    if not rows:
        raise MoodstreamError(f"{dataset_dir}: no pieces in split {split!r}")
    probs = piece_probabilities(rows, alpha, weights, generated_cap)
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
                 alpha: float = 0.5, restate_tempo: bool = True, bar_blocks: bool = False, max_switches: int = 1,
                 one_axis_share: float = 0.0, joint_dropout: float = 0.0, generated_cap: float | None = None,
                 window_moods: bool = False):
        if block_size < 8:
            raise MoodstreamError(f"block_size must be >= 8 tokens, got {block_size}")
        if batch_size < 1:
            raise MoodstreamError(f"batch_size must be >= 1, got {batch_size}")
        for name, p in (("splice_prob", splice_prob), ("cond_dropout", cond_dropout),
                        ("one_axis_share", one_axis_share), ("joint_dropout", joint_dropout),
                        ("generated_cap", 0.0 if generated_cap is None else generated_cap)):
            if not 0.0 <= p <= 1.0:
                raise MoodstreamError(f"{name} must be within [0, 1], got {p}")
        if alpha < 0:
            raise MoodstreamError(f"alpha must be >= 0, got {alpha}")
        if max_switches < 1:
            raise MoodstreamError(f"max_switches must be >= 1, got {max_switches}")
        self.data = TokenDataset(dataset_dir)
        self.rows = self.data.pieces(split)
        if not self.rows:
            raise MoodstreamError(f"{dataset_dir}: no pieces in split {split!r}; rebuild with that split's sources")
        self.split, self.block_size, self.batch_size = split, block_size, batch_size
        self.splice_prob, self.cond_dropout, self.restate_tempo = splice_prob, cond_dropout, restate_tempo
        self.bar_blocks, self.max_switches, self.one_axis_share = bar_blocks, max_switches, one_axis_share
        self.joint_dropout, self.window_moods = joint_dropout, window_moods
        self.seed = seed
        vocab = self.data.vocab
        self.vocab = vocab
        self.pad_id, self.bar_id = vocab.pad_id, vocab.bar_id
        self.genre_ids, self.mood_ids = vocab.genre_ids, vocab.mood_ids
        self.null_genre, self.null_mood = vocab.null_genre_id, vocab.null_mood_id
        for r in self.rows:
            if r["genre"] not in self.genre_ids or r["mood"] not in self.mood_ids:
                raise MoodstreamError(f"{dataset_dir}: piece {r['piece']} has labels {r['genre']}/{r['mood']} "
                                      "that its tokenizer.json does not know; rebuild the dataset")
        self.is_genre = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_genre[[i for i in range(vocab.vocab_size) if vocab.is_genre(i)]] = True
        self.is_condition = self.is_genre.copy()
        self.is_condition[[i for i in range(vocab.vocab_size) if vocab.is_mood(i)]] = True
        self.is_tempo = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_tempo[[i for t, i in vocab.token_to_id.items() if t.startswith("Tempo_")]] = True
        self.position0 = vocab.token_to_id.get("Position_0")
        self.is_timesig = np.zeros(vocab.vocab_size, dtype=bool)
        self.is_timesig[[i for t, i in vocab.token_to_id.items() if t.startswith("TimeSig_")]] = True
        self.probs = piece_probabilities(self.rows, alpha, weights, generated_cap)
        self.cdf = np.cumsum(self.probs)
        self.labels = [(r["genre"], r["mood"]) for r in self.rows]
        self.table = RemiTable(vocab) if window_moods else None
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

    # ---- windows ----------------------------------------------------------------------------------
    def _draw_piece(self, differs: Callable[[tuple[str, str]], bool] | None = None) -> int:
        """A piece drawn by the sampling weights whose labels satisfy `differs` (64 tries, then any)."""
        for _ in range(64):
            i = int(np.searchsorted(self.cdf, self.rng.random() * self.cdf[-1], side="right"))
            i = min(i, len(self.rows) - 1)
            if differs is None or differs(self.labels[i]):
                return i
        return i  # labels this rare (tiny datasets): switch anyway

    def _next_piece(self, labels: tuple[str, str], switch: bool) -> int:
        """The piece after one with `labels`: a switch changes one axis with probability `one_axis_share`."""
        genre, mood = labels
        if switch and self.rng.random() < self.one_axis_share:
            if self.rng.random() < 0.5:
                return self._draw_piece(lambda other: other[0] != genre and other[1] == mood)
            return self._draw_piece(lambda other: other[0] == genre and other[1] != mood)
        return self._draw_piece(lambda other: other != labels)

    def _dropout(self) -> tuple[bool, bool]:
        """Which axes read the null condition: each with `cond_dropout`, both with `joint_dropout`."""
        joint = self.joint_dropout > 0 and self.rng.random() < self.joint_dropout
        drop_genre = self.cond_dropout > 0 and self.rng.random() < self.cond_dropout
        drop_mood = self.cond_dropout > 0 and self.rng.random() < self.cond_dropout
        return joint or drop_genre, joint or drop_mood

    def _block(self, genre: str, mood: str, drop: tuple[bool, bool] | None = None) -> list[int]:
        """[Genre, Mood] for these labels, each axis the null condition where dropped (`drop`, else drawn)."""
        drop_genre, drop_mood = drop if drop is not None else self._dropout()
        return [self.null_genre if drop_genre else self.genre_ids[genre],
                self.null_mood if drop_mood else self.mood_ids[mood]]

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

    def _part_mood(self, i: int, part: list[int], mood: str) -> str:
        """The mood of piece i's `part` of a window: derived from the part's own music with `window_moods`
        where the piece's mood is derived and the part has enough notes, else the piece's `mood`."""
        if not self.window_moods or self.rows[i].get("mood_origin") != "derived":
            return mood
        evidence = notes_evidence(parse_notes(self.table, part))
        return mood if evidence is None else derive_mood(evidence)

    def _with_blocks(self, part: list[int], block: list[int]) -> list[int]:
        """`part` (opening with its Bar) behind `block`; with `bar_blocks`, the block before every Bar."""
        if not self.bar_blocks:
            return block + part
        out: list[int] = []
        for token in part:
            if token == self.bar_id:
                out += block
            out.append(token)
        return out

    def sample_window(self) -> tuple[np.ndarray, list[Segment]]:
        """One window of block_size + 1 tokens (x and its shifted targets) and the pieces it holds."""
        need = self.block_size + 1
        seq: list[int] = []
        segments: list[Segment] = []
        n_switches = 0
        if self.splice_prob > 0 and self.rng.random() < self.splice_prob:
            n_switches = int(self.rng.integers(1, self.max_switches + 1))
        # where the switches should fall: one in the middle half, several spread over the window
        low, high = (need // 4, need * 3 // 4) if n_switches == 1 else (need // 8, need * 7 // 8)
        targets = sorted(int(t) for t in self.rng.integers(low, max(high, low + 1), size=n_switches))
        window_drop = self._dropout() if self.bar_blocks else None
        i = self._draw_piece()
        while len(seq) < need:
            row = self.rows[i]
            bar = int(self.rng.integers(0, len(row["bars"])))
            genre, mood = self.labels[i]
            segments.append(Segment(i, bar, len(seq), genre, mood))
            block = self._block(genre, mood, window_drop)
            part = self._with_blocks(self._piece_from_bar(i, bar, need - len(seq)), block)[:need - len(seq)]
            targets = [t for t in targets if t > len(seq)]
            switched = False
            if targets:
                # cut at the last bar line at or before the target (else the first one in the window)
                bar_lines = [k - (len(block) if self.bar_blocks else 0) for k, t in enumerate(part)
                             if t == self.bar_id and k > len(block)]
                if bar_lines:
                    early = [k for k in bar_lines if len(seq) + k <= targets[0]]
                    part = part[:early[-1] if early else bar_lines[0]]
                    switched = True
                    targets.pop(0)
            local = self._part_mood(i, part, mood)
            if local != mood:  # the block names the part's mood (a dropped axis stays null)
                old, new = self.mood_ids[mood], self.mood_ids[local]
                part = [new if t == old else t for t in part]
                segments[-1] = replace(segments[-1], mood=local)
                mood = local
            seq += part
            i = self._next_piece((genre, mood), switched)
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
        if self.bar_blocks:
            # a block opens every bar: the token before it ends a bar, and learns to say so with `Bar`
            ends_bar = self.is_genre[y] & ~self.is_condition[x]
            y[ends_bar] = self.bar_id
        y[self.is_condition[y]] = IGNORE
        for b, w in enumerate(windows):
            if len(w) < self.block_size + 1:
                y[b, max(len(w) - 1, 0):] = IGNORE
        self.batches += 1
        return torch.from_numpy(x), torch.from_numpy(y)
