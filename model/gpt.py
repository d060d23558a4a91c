"""A small decoder-only transformer over token ids (nanoGPT-style; read top to bottom).

`GPT.forward(idx, targets=None, cache=None)` serves training and streaming alike: without a cache it runs
full causal attention over `idx`; with a `model.cache.KVCache` the new tokens' keys/values are written in
place at the cache's length and attend over everything before them. Positions are rotary (RoPE), so only
relative offsets matter and a context can be rebuilt from position 0 anywhere in a stream.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.errors import MoodstreamError


def rotary_tables(block_size: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (block_size, head_dim); RoPE (Su et al. 2021, RoFormer)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))  # (D/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float64), inv_freq)  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): the two halves rotate together
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of x (..., T, D) by the angles of their positions (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # "rotate_half" (GPT-NeoX layout)
    return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: "GPTConfig"):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache=None, layer: int = 0, mask=None):
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        qk = apply_rotary(qkv[:2], cos, sin)  # q and k rotated in one pass: (2, B, H, T, D)
        q, k, v = qk[0], qk[1], qkv[2]
        dropout_p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, H, T, D)
        else:
            k, v = cache.write(layer, k, v)  # (B, H, prefix + T, D)
            # One new token sees the whole prefix (no mask); a chunk after a prefix needs the offset mask.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                               is_causal=mask is None and T > 1)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: "GPTConfig"):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: "GPTConfig"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=False)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=False)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None, layer: int = 0, mask=None):
        x = x + self.attn(self.ln_1(x), cos, sin, cache, layer, mask)
        return x + self.mlp(self.ln_2(x))


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # from the tokenizer (`Vocab.vocab_size`), never hard-coded
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 192  # width; params ≈ 12·n_layer·n_embd² + vocab_size·n_embd (head tied to embedding)
    block_size: int = 1024  # longest context in tokens: the rotary table and the KV cache capacity
    dropout: float = 0.0  # on attention and residual branches, training only
    rope_base: float = 10000.0  # rotary frequency base (RoFormer)
    norm_eps: float = 1e-5  # LayerNorm epsilon
    bar_conditions: bool = False  # trained with the conditioning block before every Bar: feed it so

    def __post_init__(self):
        checks = {
            "vocab_size": self.vocab_size > 0,
            "n_layer": self.n_layer > 0,
            "n_head": self.n_head > 0,
            "n_embd": (self.n_embd > 0 and self.n_head > 0 and self.n_embd % self.n_head == 0
                       and (self.n_embd // self.n_head) % 2 == 0),
            "block_size": self.block_size > 0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "rope_base": self.rope_base > 1.0,
            "norm_eps": self.norm_eps > 0,
        }
        for name, ok in checks.items():
            if not ok:
                hint = " (must divide into n_head heads of even size)" if name == "n_embd" else ""
                raise MoodstreamError(f"GPTConfig: bad {name} = {getattr(self, name)!r}{hint}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        """Build from `to_dict` output; unknown keys are an error (they mean a newer format)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MoodstreamError(f"GPTConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=False)
        # The output head reuses wte.weight (weight tying, Press & Wolf 2017): one tensor in the state dict.
        cos, sin = rotary_tables(config.block_size, config.head_dim, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, head_dim)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # scaled residual projections (GPT-2 paper)
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, cache=None, last_only: bool = False):
        """idx (B, T) token ids → (logits, loss).

        logits: (B, T, vocab_size), or (B, 1, vocab_size) with `last_only`. loss: mean cross-entropy
        against `targets` (B, T), positions with target -1 ignored; None without targets. With `cache`,
        idx continues the cached sequence (its B must match) and the cache grows by T.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        x = self.drop(self.wte(idx))  # (B, T, C)
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, D)
        mask = None
        if cache is not None and start > 0 and T > 1:  # query i may see keys 0 .. start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer, mask)
        if cache is not None:
            cache.advance(T)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        logits = F.linear(x, self.wte.weight)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss
