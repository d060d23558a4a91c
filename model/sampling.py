"""Choosing the next token from logits: pure functions, randomness only from an explicit generator.

Order of operations: the allowed-token mask (grammar) first, then temperature, top-k, top-p (nucleus,
Holtzman et al. 2020), then one draw. Temperature 0 is argmax over the allowed tokens. The same logits,
settings and generator state always give the same token.
"""

from __future__ import annotations

import numpy as np
import torch


def check_settings(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0.0:
        raise ValueError(f"temperature = {temperature!r} must be ≥ 0")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k = {top_k!r} must be an integer ≥ 0 (0 = off)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p = {top_p!r} must be in (0, 1] (1 = off)")


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> int:
    """Draw one token id from (V,) float logits (CPU). `mask` (V,) bool: True = allowed (never all False).
    Temperature 0 takes the argmax; else the logits are divided by the temperature, cut to the `top_k` best
    and to the nucleus of mass `top_p` (the top token always stays), and one token drawn from their
    softmax. The draw is made on the allowed tokens alone in one compiled call
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

