"""Likelihood figures of `moodstream evaluate`: the model and an interpolated trigram scored on the same
real tokens (every music token after a piece's first; condition tokens are context only).

`model_token_logprobs` reads a piece in windows of the model's context; `bar_conditioned_logprobs` reads it
the way a `GPTConfig.bar_conditions` model was trained to; `likelihoods` gives the mean NLL of both models.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from model.errors import MoodstreamError

def scored_positions(vocab, ids: Sequence[int]) -> np.ndarray:
    """Positions whose token both models are scored on: every music token after the first token (condition
    tokens are context only)."""
    ids = np.asarray(ids)
    cond = np.isin(ids, list(vocab.genre_ids.values()) + list(vocab.mood_ids.values()))
    keep = ~cond
    keep[:1] = False
    return np.flatnonzero(keep)


def _condition_block_before(vocab, ids: Sequence[int], end: int) -> list[int]:
    genre = mood = None
    for token_id in ids[:end]:
        if vocab.is_genre(token_id):
            genre = token_id
        elif vocab.is_mood(token_id):
            mood = token_id
    return [t for t in (genre, mood) if t is not None]


def model_token_logprobs(model, vocab, ids: Sequence[int], device, targets: Sequence[int] | None = None
                         ) -> np.ndarray:
    """log P(targets[t] | ids[:t]) for t ≥ 1 (index t−1 of the result; `targets` defaults to `ids`); windows of
    block_size slide by half a block, each opening with the conditioning block in force, so every token sees
    ≥ half a block of past."""
    import torch

    ids = [int(i) for i in ids]
    targets = ids if targets is None else [int(i) for i in targets]
    n, block = len(ids), model.config.block_size
    out = np.zeros(max(0, n - 1))
    a = 1
    stride = max(1, block // 2)
    while a < n:
        b = min(n, a + (block if a == 1 else stride))
        c = max(0, b - 1 - block)
        prefix: list[int] = []
        if c > 0:
            prefix = _condition_block_before(vocab, ids, c)
            c = max(0, b - 1 - (block - len(prefix)))
        window = prefix + ids[c:b - 1]
        with torch.inference_mode():
            logits, _ = model(torch.tensor([window], dtype=torch.long, device=device))
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        rows = torch.arange(a - 1 - c, b - 1 - c) + len(prefix)
        scored = torch.tensor(targets[a:b], device=logp.device)
        out[a - 1:b - 1] = logp[rows.to(logp.device), scored].cpu().numpy()
        a = b
    return out


def bar_conditioned_logprobs(model, vocab, ids: Sequence[int], device) -> np.ndarray:
    """`model_token_logprobs` for a model that reads a conditioning block before every Bar
    (`GPTConfig.bar_conditions`): the piece is read so (the block in force put before each Bar that lacks
    one), and a Bar after music is scored by the model's own end-of-bar prediction, log P(Bar) at the bar's
    last token, before the block (what it was trained to predict there). Same positions as `ids`."""
    ids = [int(i) for i in ids]
    expanded: list[int] = []
    where: list[int] = []  # index of ids[t] in `expanded`
    genre = mood = None
    for token in ids:
        if vocab.is_genre(token):
            genre = token
        elif vocab.is_mood(token):
            mood = token
        elif token == vocab.bar_id and genre is not None and mood is not None and not (
                expanded and vocab.is_condition(expanded[-1])):
            expanded += [genre, mood]
        where.append(len(expanded))
        expanded.append(token)
    targets = list(expanded)
    ends_bar = [e for e in range(1, len(expanded) - 2) if vocab.is_genre(expanded[e])
                and not vocab.is_condition(expanded[e - 1]) and expanded[e + 2] == vocab.bar_id]
    for e in ends_bar:
        targets[e] = vocab.bar_id
    logprobs = model_token_logprobs(model, vocab, expanded, device, targets)
    out = np.zeros(max(0, len(ids) - 1))
    ends = set(ends_bar)
    for t in range(1, len(ids)):
        e = where[t]
        out[t - 1] = logprobs[e - 3] if ids[t] == vocab.bar_id and e - 2 in ends else logprobs[e - 1]
    return out


def likelihoods(model, vocab, pieces, train_pieces, cap: int, device, progress: bool) -> dict:
    """Mean NLL (nats/token) of the model and of the trigram baseline on the same scored tokens."""
    from tqdm import tqdm

    from training.ngram import TrigramLM

    seqs = [np.asarray(p.ids[:cap], dtype=np.int64) for p in pieces]
    model_nll, positions = [], []
    for seq in tqdm(seqs, desc="model NLL", unit="piece", disable=not progress, leave=False):
        pos = scored_positions(vocab, seq)
        positions.append(pos)
        if pos.size:
            logprobs = (bar_conditioned_logprobs if model.config.bar_conditions else model_token_logprobs)
            model_nll.append(-logprobs(model, vocab, seq, device)[pos - 1])
    model_nll = np.concatenate(model_nll) if model_nll else np.zeros(0)
    if model_nll.size == 0:
        raise MoodstreamError("no music tokens to score in the evaluation data")
    result = {"nll_per_token": float(model_nll.mean()), "nll_scored_tokens": int(model_nll.size),
              "ngram_nll_per_token": None, "ngram_train_tokens": 0}
    if train_pieces:
        lm = TrigramLM(vocab.vocab_size).fit(np.asarray(p.ids, dtype=np.int64) for p in train_pieces)
        ngram_nll = []
        for seq, pos in zip(seqs, positions):
            probs = lm.token_probs([seq])
            ngram_nll.append(-np.log(probs[pos]))
        result["ngram_nll_per_token"] = float(np.concatenate(ngram_nll).mean())
        result["ngram_train_tokens"] = lm.n_tokens
        result["nll_improvement_over_ngram"] = 1.0 - result["nll_per_token"] / result["ngram_nll_per_token"]
    return result
