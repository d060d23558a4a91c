"""A preallocated key/value cache for one GPT: tensors of fixed shape, written in place.

`length` counts the tokens held; `GPT.forward(..., cache=c)` writes the new tokens' keys/values at
`length` and then advances it. `truncate(n)` cuts back to an earlier length in O(1) (the slots after it
are simply overwritten later); `reset()` empties it. Nothing here allocates per token.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, capacity: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        # (layer, k/v, B, H, capacity, D): one allocation for the life of the stream.
        self.kv = torch.zeros(n_layer, 2, batch_size, n_head, capacity, head_dim, device=device, dtype=dtype)
        self.capacity = capacity
        self.batch_size = batch_size
        self.length = 0

    @classmethod
    def for_model(cls, model, batch_size: int = 1, capacity: int | None = None) -> "KVCache":
        """A cache matching `model`'s shape, device and dtype; capacity defaults to its block_size."""
        cfg = model.config
        weight = model.wte.weight
        capacity = cfg.block_size if capacity is None else min(capacity, cfg.block_size)
        return cls(cfg.n_layer, batch_size, cfg.n_head, cfg.head_dim, capacity, weight.device, weight.dtype)

    def reset(self) -> None:
        self.length = 0

    def truncate(self, length: int) -> None:
        """Forget every token from `length` on (0 ≤ length ≤ current length)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) at the current length; return views of keys/values 0 .. length + T."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} tokens > capacity {self.capacity}; reanchor first")
        keys, values = self.kv[layer, 0], self.kv[layer, 1]  # (B, H, capacity, D)
        keys[:, :, self.length:end] = k
        values[:, :, self.length:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n_tokens: int) -> None:
        """Called by the model once every layer has written its `n_tokens` new keys/values."""
        self.length += n_tokens
