"""Incremental decoding for one stream: the model, its KV cache and classifier-free guidance.

`Decoder` works on token ids only (no vocabulary strings, no sampling): `prefill(ids)` and
`decode_one(token_id)` feed tokens and return next-token logits as a float32 CPU tensor (V,);
`truncate(length)` throws tokens away; `reanchor(ids)` rebuilds the cache from scratch (a conditioning
block + recent bars, picked by the caller) when it is full, `slide(...)` makes the same room keeping the
recent tokens' keys and values. With guidance on, a second, unconditioned row (every Genre_/Mood_ id replaced by
its axis's null condition, `Vocab.null_ids`, or the ids a caller passes as `negative`) runs in the same batched
forward and the logits are `uncond + w · (cond − uncond)` (Ho & Salimans 2022), with w free to change per token.
On CPU a float model decodes one token through `FusedStep` (same logits, one compiled call:
`model.kernels`); prefill, int8 models and CUDA go through `GPT.forward`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from model.cache import KVCache
from model.gpt import apply_rotary
from model.vocab import MOOD_NEGATIVES

log = logging.getLogger(__name__)


def default_device() -> str:
    """CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_for_decoding(model, device: str | torch.device | None = None, int8: bool = False):
    """Put `model` in eval mode on `device` (default: CUDA when present) for streaming: bf16 on CUDA;
    on CPU, torch uses one thread (as fast as two at these sizes, and leaves a core to the rest) and
    `int8=True` swaps in int8 dynamic-quantised Linear layers (`model.quant`)."""
    device = torch.device(device or default_device())
    if device.type == "cuda":
        if int8:
            raise ValueError("int8 decoding is a CPU path; on CUDA the model runs in bf16")
        return model.to(device=device, dtype=torch.bfloat16).eval()
    model = model.to(device).eval()
    if torch.get_num_threads() != 1:
        log.info("decoding on CPU with 1 thread (was %d)", torch.get_num_threads())
        torch.set_num_threads(1)
    if int8:
        from model.quant import quantize_int8

        model = quantize_int8(model)
    return model


def unconditioned_map(vocab, mood_negative: str = "null") -> torch.Tensor:
    """A (V,) id → id table for guidance's second row: every condition token to its axis's null condition
    (`Vocab.null_ids`), or with `mood_negative` "opposite" each mood to its opposite quadrant's
    (`Vocab.contrast_ids`)."""
    if mood_negative not in MOOD_NEGATIVES:
        raise ValueError(f"mood_negative = {mood_negative!r} must be one of {', '.join(MOOD_NEGATIVES)}")
    ids = range(vocab.vocab_size)
    table = vocab.contrast_ids(ids) if mood_negative == "opposite" else vocab.null_ids(ids)
    return torch.tensor(table, dtype=torch.long)


class FusedStep:
    """`GPT.forward` for one new token per row with a `KVCache`, compiled (`model.kernels.decode_step`),
    with the weights re-laid out.

    A batch-1 step of a small model pays mostly per-call overhead, so the weights are laid out once for
    one compiled call per token: per layer one (5C, C) matrix gives q, k, v *and* the rotary "rotate_half"
    of q and k (a signed permutation folded into the weights), so RoPE is a multiply-add; the LayerNorm
    gains are folded into the matrix after each norm and the attention scale into q's rotary table. Keys
    and values are written into the cache's own memory (a NumPy view of it), so prefill (`GPT.forward`)
    and this step share one cache. Logits equal `GPT.forward` up to float rounding (tested). The weights
    are copied when the step is built: build it on a frozen model. Not thread-safe (scratch buffers).
    """

    def __init__(self, model):
        cfg = model.config
        C, H, D = cfg.n_embd, cfg.n_head, cfg.head_dim
        self.n_embd, self.n_head, self.head_dim, self.eps = C, H, D, cfg.norm_eps
        half = D // 2
        rotate_half = torch.zeros(D, D)  # x @ R = cat(-x[half:], x[:half]) per head (GPT-NeoX layout)
        rotate_half[torch.arange(half) + half, torch.arange(half)] = -1.0
        rotate_half[torch.arange(half), torch.arange(half) + half] = 1.0
        per_head = torch.block_diag(*[rotate_half] * H).to(model.wte.weight)  # (C, C)

        def array(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32)

        with torch.no_grad():
            qkv, out, fc, mlp = [], [], [], []
            for block in model.blocks:  # every matrix (out, in), as a Linear's weight: w @ x
                w_q, w_k, w_v = block.attn.c_attn.weight.split(C, dim=0)  # each (C, C)
                w_qkv = torch.cat([w_q, w_k, w_v, per_head.t() @ w_q, per_head.t() @ w_k], dim=0)  # (5C, C)
                qkv.append(w_qkv * block.ln_1.weight)
                out.append(block.attn.c_proj.weight)
                fc.append(block.mlp.c_fc.weight * block.ln_2.weight)
                mlp.append(block.mlp.c_proj.weight)
            # (L, 5C, C), (L, C, C), (L, 4C, C), (L, C, 4C)
            self.layers = tuple(array(torch.stack(ws)) for ws in (qkv, out, fc, mlp))
            self.wte = array(model.wte.weight)  # (V, C)
            self.head = array(model.wte.weight * model.ln_f.weight)  # (V, C): the tied head, ln_f gain in
            cos = model.rope_cos.repeat(1, 2 * H)  # (block_size, 2C): q then k, every head
            sin = model.rope_sin.repeat(1, 2 * H)
            scale = torch.cat([torch.full((C,), D ** -0.5), torch.ones(C)])  # softmax(q·k / √D): √D folded into q
            self.cos, self.sin = array(cos * scale), array(sin * scale)
        from model.kernels import decode_step  # imports Numba: only where a fused step is built

        self._decode_step = decode_step
        self._scratch: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}  # (rows, capacity) → buffers
        # Compile (first run: ~7 s) or load from numba's disk cache (~0.7 s) now, not at the first token.
        self.step([0], KVCache(cfg.n_layer, 1, H, D, 1))

    @staticmethod
    def supports(model) -> bool:
        """True for a float GPT on CPU whose Linear layers are plain (not int8)."""
        from model.quant import is_quantized

        return (model.wte.weight.device.type == "cpu" and model.wte.weight.dtype == torch.float32
                and not is_quantized(model))

    def _buffers(self, rows: int, capacity: int) -> tuple[np.ndarray, ...]:
        """The kernel's scratch buffers for `rows` rows and a cache of `capacity`, made once."""
        buffers = self._scratch.get((rows, capacity))
        if buffers is None:
            C = self.n_embd
            shapes = ((rows, C), (rows, C), (rows, 5 * C), (rows, C), (rows, 4 * C), (rows, 4 * C), (capacity,))
            buffers = tuple(np.empty(s, dtype=np.float32) for s in shapes)
            buffers += (np.empty(max(capacity, 4 * C), dtype=np.int32),)
            self._scratch[(rows, capacity)] = buffers
        return buffers

    def step(self, ids: Sequence[int], cache: KVCache) -> np.ndarray:
        """`ids` (one per row) continue the cached sequence → next-token logits (B, V) float32; the cache
        grows by 1. The array is new on every call."""
        pos = cache.length
        if pos >= cache.capacity:
            raise ValueError(f"KV cache full: {pos + 1} tokens > capacity {cache.capacity}; reanchor first")
        vocab_size = self.wte.shape[0]
        if any(not 0 <= token_id < vocab_size for token_id in ids):  # the compiled step does not check
            raise ValueError(f"token ids {list(ids)} outside the vocabulary (0 to {vocab_size - 1})")
        rows = np.asarray(ids, dtype=np.int64)
        logits = np.empty((rows.size, vocab_size), dtype=np.float32)
        self._decode_step(rows, self.wte, *self.layers, self.head, self.cos[pos], self.sin[pos], cache.kv.numpy(),
                          pos, self.eps, self.n_head, *self._buffers(rows.size, cache.capacity), logits)
        cache.advance(1)
        return logits


_FEW = 4  # up to this many tokens go through the one-token step faster than through one forward


class Decoder:
    """Owns the KV cache(s) of one stream. Not thread-safe: one generator thread drives it.

    `guidance=True` needs `vocab` (to find the condition ids); then each step is one forward of batch 2
    (row 0 conditioned, row 1 unconditioned, or for the mood its opposite with `mood_negative="opposite"`: see
    `unconditioned_map`). The model is used as given (see `prepare_for_decoding`) and must not change
    afterwards: with `fused` (default) `decode_one` runs a `FusedStep` built from a copy of its weights where
    supported (float, CPU); `fused=False` always calls `GPT.forward`.
    """

    def __init__(self, model, guidance: bool = False, device: str | torch.device | None = None,
                 vocab=None, capacity: int | None = None, fused: bool = True, mood_negative: str = "null"):
        if guidance and vocab is None:
            raise ValueError("Decoder(guidance=True) needs the vocab to build the unconditioned stream")
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else model.wte.weight.device
        self.guidance = guidance
        rows = 2 if guidance else 1
        self.cache = KVCache.for_model(model, batch_size=rows, capacity=capacity)
        self._uncond = unconditioned_map(vocab, mood_negative).to(self.device) if guidance else None
        self._uncond_ids = self._uncond.tolist() if guidance else None  # plain ints for the hot path
        self._step_ids = torch.zeros(rows, 1, dtype=torch.long, device=self.device)  # reused every token
        self._fused = FusedStep(self.model) if fused and FusedStep.supports(self.model) else None

    @property
    def length(self) -> int:
        """Tokens in the cache."""
        return self.cache.length

    @property
    def fused(self) -> bool:
        """Whether `decode_one` runs the `FusedStep` (else `GPT.forward`)."""
        return self._fused is not None

    @property
    def capacity(self) -> int:
        """Most tokens the cache can hold (the model's block_size unless set lower)."""
        return self.cache.capacity

    def _combine(self, logits: torch.Tensor, guidance_w: float) -> torch.Tensor:
        """(rows, 1, V) model logits → guided (V,) float32 on CPU."""
        if self.guidance:
            cond, uncond = logits[0, -1].float(), logits[1, -1].float()
            out = cond if guidance_w == 1.0 else uncond + guidance_w * (cond - uncond)
        else:
            out = logits[0, -1].float()
        return out.cpu() if out.device.type != "cpu" else out

    def unconditioned(self, ids: Sequence[int]) -> list[int]:
        """`ids` as the guidance row reads them by default: every Genre_/Mood_ id made the null condition."""
        return [self._uncond_ids[i] for i in ids] if self.guidance else list(ids)

    @torch.inference_mode()
    def prefill(self, ids: Sequence[int] | torch.Tensor, guidance_w: float = 1.0,
                negative: Sequence[int] | None = None) -> torch.Tensor:
        """Append `ids` (at least one) to the cache; return the logits for the token after them. With guidance,
        `negative` (as long as `ids`) is what the guidance row reads instead of `unconditioned(ids)`."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).view(1, -1)
        if ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        if self.length + ids.shape[1] > self.capacity:
            raise ValueError(f"prefill of {ids.shape[1]} tokens overflows the cache "
                             f"({self.length}/{self.capacity} used); reanchor with fewer tokens")
        if self.guidance:
            if negative is None:
                other = self._uncond[ids]
            else:
                other = torch.as_tensor(negative, dtype=torch.long, device=self.device).view(1, -1)
                if other.shape != ids.shape:
                    raise ValueError(f"negative has {other.shape[1]} tokens for {ids.shape[1]}")
            ids = torch.cat([ids, other], dim=0)  # (2, T)
        logits, _ = self.model(ids, cache=self.cache, last_only=True)
        return self._combine(logits, guidance_w)

    def decode_one(self, token_id: int, guidance_w: float = 1.0, negative: int | None = None) -> torch.Tensor:
        """Append one token; return the logits for the next. Raises ValueError when the cache is full. With
        guidance, `negative` is the guidance row's token instead of `unconditioned([token_id])`."""
        if self.length >= self.capacity:
            raise ValueError(f"KV cache full ({self.capacity} tokens); reanchor first")
        other = None
        if self.guidance:
            other = self._uncond_ids[token_id] if negative is None else negative
        if self._fused is not None:
            rows = self._fused.step([token_id, other] if self.guidance else [token_id], self.cache)
            if self.guidance and guidance_w != 1.0:
                cond, uncond = rows
                cond -= uncond
                cond *= guidance_w
                cond += uncond  # uncond + w·(cond − uncond)
            return torch.from_numpy(rows[0])
        return self._forward_one(token_id, guidance_w, other)

    @torch.inference_mode()
    def _forward_one(self, token_id: int, guidance_w: float, other: int | None) -> torch.Tensor:
        """`decode_one` through `GPT.forward` (no fused step: int8, CUDA, or `fused=False`)."""
        self._step_ids[0, 0] = token_id
        if self.guidance:
            self._step_ids[1, 0] = other
        logits, _ = self.model(self._step_ids, cache=self.cache)
        return self._combine(logits, guidance_w)

    def truncate(self, length: int) -> None:
        """Forget every token from `length` on; the next token continues after token `length - 1`."""
        self.cache.truncate(length)

    @torch.inference_mode()
    def slide(self, start: int, lead: Sequence[int], pending: Sequence[int], guidance_w: float = 1.0,
              negative: Sequence[int] | None = None) -> torch.Tensor:
        """Make room without recomputing: drop the first `start` cached tokens, keep the rest as they are,
        put `lead` (fresh) in front of them, then prefill `pending` (at least one token); return the logits
        after it. The kept keys move to their new positions by one more rotary turn (RoPE scores depend
        only on offsets), so this costs a copy, not a forward over the kept tokens. Unlike `reanchor`,
        the kept tokens keep what they saw before `start`, and they did not see `lead`. `negative`: the
        guidance row's reading of `pending` (see `prefill`)."""
        keep = self.length - start
        if not 0 <= start <= self.length:
            raise ValueError(f"cannot keep the cache from token {start}: it holds {self.length}")
        if not pending:
            raise ValueError("slide needs at least one pending token to return logits for")
        if len(lead) + keep + len(pending) > self.capacity:
            raise ValueError(f"{len(lead)} + {keep} + {len(pending)} tokens overflow the cache ({self.capacity})")
        shift = len(lead) - start
        if shift and keep:
            kv = self.cache.kv  # (layer, k/v, B, H, capacity, D)
            kept = kv[:, :, :, :, start:self.length].clone()
            turn = abs(shift)  # a turn by -n is the turn by n with the sine negated
            cos = self.model.rope_cos[turn].to(kept)
            sin = self.model.rope_sin[turn].to(kept) * (1.0 if shift > 0 else -1.0)
            kept[:, 0] = apply_rotary(kept[:, 0], cos, sin)
            kv[:, :, :, :, len(lead):len(lead) + keep] = kept
        self.cache.length = 0  # the lead goes in at positions 0 .. len(lead) - 1
        if lead:
            self._feed(lead)
        self.cache.length = len(lead) + keep
        return self._feed(pending, guidance_w, negative)

    def _feed(self, ids: Sequence[int], guidance_w: float = 1.0, negative: Sequence[int] | None = None
              ) -> torch.Tensor:
        """`prefill`, or for a few tokens the one-token step once each (faster than a forward over them)."""
        if self._fused is None or len(ids) > _FEW:
            return self.prefill(ids, guidance_w, negative)
        for i, token_id in enumerate(ids):
            logits = self.decode_one(token_id, guidance_w, None if negative is None else negative[i])
        return logits

    def reanchor(self, ids: Sequence[int] | torch.Tensor, guidance_w: float = 1.0,
                 negative: Sequence[int] | None = None) -> torch.Tensor:
        """Empty the cache and prefill `ids` from position 0 (rotary positions are relative)."""
        self.cache.reset()
        return self.prefill(ids, guidance_w, negative)

