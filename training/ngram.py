"""Interpolated trigram baseline with absolute discounting (d = 0.75), the yardstick for `evaluate`.

P3(w|u,v) = max(c(uvw) - d, 0)/c(uv·) + d·N1+(uv·)/c(uv·) · P2(w|v), falling back to P2 when c(uv·) = 0;
P2 likewise over P1; P1 is add-one smoothed so every token has mass (Ney, Essen & Kneser 1994).
Counts live in sorted numpy key arrays, so fitting and scoring ~10M tokens takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

DISCOUNT = 0.75


def _sorted_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq, counts.astype(np.float64)


def _lookup(table_keys: np.ndarray, table_vals: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Values for `keys` in a sorted key table; 0 where absent."""
    if table_keys.size == 0:
        return np.zeros(keys.shape, dtype=np.float64)
    idx = np.searchsorted(table_keys, keys)
    idx_clipped = np.minimum(idx, table_keys.size - 1)
    found = table_keys[idx_clipped] == keys
    return np.where(found, table_vals[idx_clipped], 0.0)


def _grams(seqs: Iterable[Sequence[int]], boundary: int):
    """Flattened (u, v, w) arrays over all sequences; each sequence starts after two boundary tokens."""
    us, vs, ws = [], [], []
    for seq in seqs:
        arr = np.asarray(seq, dtype=np.int64)
        if arr.size == 0:
            continue
        padded = np.concatenate([[boundary, boundary], arr])
        us.append(padded[:-2])
        vs.append(padded[1:-1])
        ws.append(padded[2:])
    if not ws:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(us), np.concatenate(vs), np.concatenate(ws)


@dataclass
class TrigramLM:
    """Fitted counts of an interpolated absolute-discounting trigram model over ids < vocab_size."""

    vocab_size: int
    discount: float = DISCOUNT

    def fit(self, seqs: Iterable[Sequence[int]]) -> "TrigramLM":
        V = self.vocab_size + 1  # one extra id marks the sequence start
        self._boundary = self.vocab_size
        u, v, w = _grams(seqs, self._boundary)
        if w.size == 0:
            raise ValueError("no tokens to fit the trigram baseline on")
        self.n_tokens = int(w.size)
        counts = np.bincount(w, minlength=V)[: self.vocab_size].astype(np.float64)
        self.unigram = np.append((counts + 1.0) / (w.size + self.vocab_size), 0.0)  # never predicts the boundary
        # bigram: counts c(v,w), context totals c(v·) and distinct followers N1+(v·)
        self._bi_keys, self._bi_counts = _sorted_counts(v * V + w)
        self._bi_ctx_total = np.bincount(v, minlength=V).astype(np.float64)
        self._bi_ctx_types = np.bincount(self._bi_keys // V, minlength=V).astype(np.float64)
        # trigram: counts c(u,v,w), totals c(uv·) and N1+(uv·)
        ctx = u * V + v
        self._tri_keys, self._tri_counts = _sorted_counts(ctx * V + w)
        self._tri_ctx_keys, self._tri_ctx_total = _sorted_counts(ctx)
        tri_ctx_of_types = self._tri_keys // V
        ctx_keys_types, ctx_types = _sorted_counts(tri_ctx_of_types)
        self._tri_ctx_types = _lookup(ctx_keys_types, ctx_types, self._tri_ctx_keys)
        self._V = V
        return self

    def _bigram_prob(self, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        d = self.discount
        total = self._bi_ctx_total[v]
        count = _lookup(self._bi_keys, self._bi_counts, v * self._V + w)
        types = self._bi_ctx_types[v]
        safe = np.maximum(total, 1.0)
        interpolated = np.maximum(count - d, 0.0) / safe + d * types / safe * self.unigram[w]
        return np.where(total > 0, interpolated, self.unigram[w])

    def token_probs(self, seqs: Iterable[Sequence[int]]) -> np.ndarray:
        """P(token | two previous tokens) for every token of every sequence, in order."""
        d = self.discount
        u, v, w = _grams(seqs, self._boundary)
        ctx = u * self._V + v
        p2 = self._bigram_prob(v, w)
        total = _lookup(self._tri_ctx_keys, self._tri_ctx_total, ctx)
        types = _lookup(self._tri_ctx_keys, self._tri_ctx_types, ctx)
        count = _lookup(self._tri_keys, self._tri_counts, ctx * self._V + w)
        safe = np.maximum(total, 1.0)
        p3 = np.maximum(count - d, 0.0) / safe + d * types / safe * p2
        return np.where(total > 0, p3, p2)

    def nll_per_token(self, seqs: Iterable[Sequence[int]]) -> float:
        """Mean negative log-likelihood in nats per token."""
        probs = self.token_probs(seqs)
        if probs.size == 0:
            raise ValueError("no tokens to score")
        return float(-np.log(probs).mean())
