"""The trigram baseline: a proper distribution, and it learns what it is shown."""

from __future__ import annotations

import math

import numpy as np

from training.ngram import TrigramLM


def test_probabilities_sum_to_one_over_the_vocabulary():
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 12, size=200).tolist() for _ in range(5)]
    lm = TrigramLM(vocab_size=12).fit(train)
    for context in ([3, 7], [0, 0], [11, 5]):
        seqs = [context + [w] for w in range(12)]
        # the probability of the last token of each sequence given the two before it
        probs = [lm.token_probs([s])[-1] for s in seqs]
        assert math.isclose(sum(probs), 1.0, rel_tol=1e-9)


def test_repeating_pattern_is_learnt_and_beats_unigram():
    pattern = [1, 2, 3, 4] * 300
    lm = TrigramLM(vocab_size=8).fit([pattern])
    nll = lm.nll_per_token([[1, 2, 3, 4] * 20])
    assert nll < 0.2
    assert lm.nll_per_token([[4, 3, 2, 1] * 20]) > 1.0  # unseen order costs more
    uniform = math.log(8)
    noisy = np.random.default_rng(1).integers(0, 8, size=500).tolist()
    assert lm.nll_per_token([noisy]) > nll and uniform > nll


def test_unseen_tokens_have_mass():
    lm = TrigramLM(vocab_size=10).fit([[1, 2, 1, 2, 1, 2]])
    probs = lm.token_probs([[9, 9, 9]])
    assert np.all(probs > 0) and np.all(np.isfinite(np.log(probs)))
