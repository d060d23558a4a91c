"""Sampling: seeded determinism, greedy at temperature 0, top-k / top-p / mask never left, and the
draw follows softmax(logits / T)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.engine import Decoder
from model.sampling import sample


pytestmark = pytest.mark.usefixtures("one_torch_thread")

V = 50


def rand_logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * scale


def draws(logits, n, seed=0, **settings) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return [sample(logits, generator=gen, **settings) for _ in range(n)]


def test_same_seed_same_tokens_and_another_seed_differs():
    logits = rand_logits(1, scale=0.5)
    assert draws(logits, 200, seed=7, top_k=20, top_p=0.9) == draws(logits, 200, seed=7, top_k=20, top_p=0.9)
    assert draws(logits, 200, seed=7) != draws(logits, 200, seed=8)


def test_temperature_zero_is_argmax_whatever_the_generator():
    logits = rand_logits(2)
    best = int(logits.argmax())
    assert set(draws(logits, 20, seed=1, temperature=0.0)) == {best}
    assert set(draws(logits, 20, seed=2, temperature=0.0, top_k=3, top_p=0.5)) == {best}
    mask = torch.ones(V, dtype=torch.bool)
    mask[best] = False
    second = int(logits.masked_fill(~mask, float("-inf")).argmax())
    assert sample(logits, temperature=0.0, mask=mask) == second != best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("top_k", [1, 5, 17])
def test_top_k_never_samples_outside_the_k_best(seed, top_k):
    logits = rand_logits(seed, scale=0.3)  # flat: plenty of draws would land outside if not filtered
    allowed = set(torch.argsort(logits, descending=True)[:top_k].tolist())
    got = draws(logits, 300, seed=seed, top_k=top_k)
    assert set(got) <= allowed
    if top_k > 1:
        assert len(set(got)) > 1  # it does sample, not just argmax


def nucleus(logits: torch.Tensor, top_p: float) -> set[int]:
    """Smallest set of the most likely tokens whose probability reaches top_p (computed independently)."""
    probs = np.exp(logits.double().numpy() - logits.double().numpy().max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    chosen, total = set(), 0.0
    for token in order:
        chosen.add(int(token))
        total += probs[token]
        if total >= top_p:
            break
    return chosen


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9])
def test_top_p_never_samples_outside_the_nucleus(seed, top_p):
    logits = rand_logits(seed + 10, scale=1.5)
    allowed = nucleus(logits, top_p)
    got = draws(logits, 300, seed=seed, top_p=top_p)
    assert set(got) <= allowed
    assert len(allowed) == 1 or len(set(got)) > 1


def test_mask_is_never_left_even_for_the_most_likely_tokens():
    logits = rand_logits(3)
    mask = torch.zeros(V, dtype=torch.bool)
    mask[[4, 9, 33]] = True
    logits[torch.argsort(logits, descending=True)[:5]] += 50.0  # the favourites may be masked out
    got = draws(logits, 300, seed=3, mask=mask, top_p=0.99)
    assert set(got) <= {4, 9, 33}


def test_empty_mask_and_bad_settings_are_errors():
    logits = rand_logits(4)
    with pytest.raises(ValueError, match="empty"):
        sample(logits, mask=torch.zeros(V, dtype=torch.bool))
    for wrong in (torch.ones(V - 1, dtype=torch.bool), torch.ones(0, dtype=torch.bool)):  # the draw is compiled
        with pytest.raises(ValueError, match="shape"):
            sample(logits, mask=wrong)
    for bad in (dict(temperature=-0.1), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            sample(logits, **bad)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_draws_follow_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    expected = torch.softmax(logits / temperature, dim=-1).numpy()
    n = 20000
    counts = np.bincount(draws(logits, n, seed=5, temperature=temperature), minlength=4) / n
    assert np.abs(counts - expected).max() < 0.015


def test_a_tiny_top_p_keeps_the_top_token_only():
    logits = rand_logits(6, scale=10.0)
    assert set(draws(logits, 50, seed=6, top_p=1e-6)) == {int(logits.argmax())}


def generate(model, first: list[int], n: int, seed: int) -> list[int]:
    decoder = Decoder(model)
    gen = torch.Generator().manual_seed(seed)
    logits = decoder.prefill(first)
    out = []
    for _ in range(n):
        token = sample(logits, temperature=1.0, generator=gen)
        out.append(token)
        logits = decoder.decode_one(token)
    return out


def test_generation_with_the_model_is_reproducible_from_the_seed(tiny_model_dir, vocab):
    model, _, _ = load_checkpoint(tiny_model_dir)
    first = [vocab.genre_ids["pop"], vocab.mood_ids["happy"], vocab.bar_id]
    assert generate(model, first, 60, seed=11) == generate(model, first, 60, seed=11)
    assert generate(model, first, 60, seed=11) != generate(model, first, 60, seed=12)
