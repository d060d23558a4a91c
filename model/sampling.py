"""Choosing the next token from logits: pure functions, randomness only from an explicit generator.

Order of operations: the allowed-token mask (grammar) first, then temperature, top-k, top-p (nucleus,
Holtzman et al. 2020), then one draw. Temperature 0 is argmax over the allowed tokens. The same logits,
settings and generator state always give the same token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy (argmax); < 1 sharper, > 1 flatter
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # keep the smallest set of tokens holding this much probability; 1 = all

    def __post_init__(self):
        check_settings(self.temperature, self.top_k, self.top_p)


def check_settings(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0.0:
        raise ValueError(f"temperature = {temperature!r} must be ≥ 0")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k = {top_k!r} must be an integer ≥ 0 (0 = off)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p = {top_p!r} must be in (0, 1] (1 = off)")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """(V,) logits → (V,) scaled logits with every token that may not be drawn set to -inf.

    `mask` (V,) bool: True = allowed. Temperature 0 leaves only the argmax. Never all -inf: at least
    one allowed token survives (an all-False mask is an error).
    """
    check_settings(temperature, top_k, top_p)
    if mask is not None:
        if not mask.any():
            raise ValueError("the allowed-token mask is empty")
        logits = logits.masked_fill(~mask, float("-inf"))
    if temperature == 0.0:
        greedy = torch.full_like(logits, float("-inf"))
        best = int(logits.argmax())
        greedy[best] = 0.0
        return greedy
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # probability mass ranked above each token
        drop_sorted = before >= top_p  # the top token always stays (before = 0 < top_p)
        logits = logits.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    return logits


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> int:
    """Draw one token id from (V,) float logits (CPU); the same choice as drawing from
    `softmax(filter_logits(...))`, made on the allowed tokens alone in one compiled call
    (`model.kernels.draw`: a grammar leaves ~80 of ~520 tokens, and a dozen small NumPy or torch calls
    per token cost more than the maths). One uniform number comes from `generator` per draw (none at
    temperature 0)."""
    check_settings(temperature, top_k, top_p)
    from model.kernels import draw

    values = logits.detach().float().cpu().numpy()
    allowed = _NO_MASK if mask is None else mask.cpu().numpy()
    if mask is not None and allowed.shape != values.shape:  # (the compiled draw does not check)
        raise ValueError(f"mask of shape {tuple(allowed.shape)} for logits of shape {tuple(values.shape)}")
    u = 0.0 if temperature == 0.0 else float(torch.rand((), generator=generator, dtype=torch.float64))
    choice = int(draw(values, allowed, float(temperature), int(top_k), float(top_p), u))
    if choice < 0:
        raise ValueError("the allowed-token mask is empty")
    return choice


_NO_MASK = np.zeros(0, dtype=np.bool_)  # `draw`'s "every token allowed"


def sample_with(config: SamplingConfig, logits: torch.Tensor, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None) -> int:
    """`sample` with the settings of a `SamplingConfig`."""
    return sample(logits, config.temperature, config.top_k, config.top_p, generator, mask)
