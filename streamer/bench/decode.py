"""Decode-speed measurements: our cached decoder vs a seed-style full-recompute baseline.

`own_stream` samples the model's own grammatical output; `decode_timing` times the whole per-token step
the streamer runs (grammar mask + sampling + `Decoder.decode_one`) with the cache holding the tokens just
before a given context length, continuing that stream. `baseline_tok_s` times `SeedBaseline`, a
`torch.nn.TransformerEncoder` of the same size with a causal mask that recomputes the whole sequence for
every new token (the seed's approach). `measure_decode` splits the step's time into grammar, sampling and
model shares. Benchmarks, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

WARMUP_STEPS = 16  # untimed steps before the first timed window (allocator, caches, branch predictors)


@dataclass(frozen=True)
class DecodeTiming:
    context: int  # tokens in the cache when the timed window ends (capped by the model's block_size)
    tokens: int  # timed steps
    tok_s: float
    p50_ms: float
    p99_ms: float
    guidance: bool

    def to_dict(self) -> dict:
        return {"context": self.context, "tokens": self.tokens, "tok_s": self.tok_s, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "guidance": self.guidance}


def percentile_ms(samples_s: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100, linear interpolation) of durations in seconds, in milliseconds."""
    if len(samples_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(samples_s, dtype=np.float64) * 1e3, q))


def _sample_settings():
    """The live instrument's sampling defaults (temperature, top-k, top-p)."""
    from streamer.controls import Controls

    c = Controls()
    return c.temperature, c.top_k, c.top_p


def own_stream(decoder, vocab, grammar, conditions, length: int, seed: int = 0) -> list[int]:
    """`length` ids of the model's own output under `grammar`: a conditioning block, then sampled tokens
    with the streamer's sampling defaults (guidance as the decoder has it, weight 1)."""
    from model.sampling import sample

    temperature, top_k, top_p = _sample_settings()
    ids = list(vocab.condition_ids(conditions))
    gen = torch.Generator().manual_seed(seed)
    state = grammar.state_after(ids)
    logits = decoder.reanchor(ids)
    while len(ids) < length:
        token = sample(logits, temperature, top_k, top_p, gen, state.allowed())
        state = state.advance(token)
        ids.append(token)
        if len(ids) < length:
            logits = decoder.decode_one(token)
    return ids


def decode_timing(decoder, grammar, stream: Sequence[int], context: int, n_tokens: int,
                  guidance_w: float = 1.0, seed: int = 0, warmup: bool = True) -> DecodeTiming:
    """Time `n_tokens` full streaming steps (mask → sample → advance grammar → decode_one) ending with
    `context` tokens in the cache (capped at the decoder's capacity).

    Each window of w = min(n_tokens, context // 2) steps starts from the first `context - w` ids of
    `stream` (the model's own output, prefilled, untimed) and continues with freshly sampled tokens;
    windows repeat with other seeds until `n_tokens` steps are timed.
    """
    from model.sampling import sample

    temperature, top_k, top_p = _sample_settings()
    context = min(context, decoder.capacity, len(stream))
    window = max(1, min(n_tokens, context // 2))
    times: list[float] = []
    repeat = 0
    while len(times) < n_tokens:
        prefix = list(stream[:context - window])
        state = grammar.state_after(prefix)
        logits = decoder.reanchor(prefix, guidance_w)
        gen = torch.Generator().manual_seed(seed + 1000 * repeat)
        steps = window
        if warmup and repeat == 0:  # warm up on the first window, then start it again
            for _ in range(min(WARMUP_STEPS, window)):
                token = sample(logits, temperature, top_k, top_p, gen, state.allowed())
                state = state.advance(token)
                logits = decoder.decode_one(token, guidance_w)
            state = grammar.state_after(prefix)
            logits = decoder.reanchor(prefix, guidance_w)
        for _ in range(min(steps, n_tokens - len(times))):
            t0 = time.perf_counter()
            token = sample(logits, temperature, top_k, top_p, gen, state.allowed())
            state = state.advance(token)
            logits = decoder.decode_one(token, guidance_w)
            times.append(time.perf_counter() - t0)
        repeat += 1
    return DecodeTiming(context, len(times), len(times) / sum(times), percentile_ms(times, 50),
                        percentile_ms(times, 99), decoder.guidance)


class SeedBaseline(nn.Module):
    """The seed's model: nn.TransformerEncoder + causal mask, recomputing the whole sequence per token.

    Same depth, width, heads and vocabulary as the GPT it stands in for (learned positions instead of
    rotary ones, biases as PyTorch has them: slightly more parameters, the same work per token)."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (1, T) → logits of the last position (1, V), recomputing all T positions."""
        T = idx.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)  # (T, T) additive
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))  # (1, T, C)
        return self.head(self.encoder(x, mask=mask, is_causal=True))[:, -1]  # (1, V)


@torch.inference_mode()
def baseline_tok_s(config, context: int, n_tokens: int, device: str | torch.device = "cpu",
                   seed: int = 0) -> float:
    """Tokens/s of the seed-style baseline (same shape as `config`) generating its last `n_tokens`
    tokens up to `context` (greedy; no grammar, no sampling: the baseline gets the cheaper step)."""
    device = torch.device(device)
    n_tokens = max(1, min(n_tokens, context // 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SeedBaseline(config.vocab_size, config.n_layer, config.n_head, config.n_embd,
                             max(config.block_size, context)).to(device).eval()
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, config.vocab_size, (1, context - n_tokens), generator=gen).to(device)
    model(idx)  # warm-up at the starting length
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        logits = model(idx)
        nxt = torch.argmax(logits, dim=-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
    _sync(device)
    return n_tokens / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def expected_bar_s(tokens: int, tok_s: float) -> float:
    """Seconds to write a bar of `tokens` tokens at `tok_s` (for the shape table)."""
    return tokens / tok_s if tok_s > 0 else math.inf


def measure_decode(decoder, vocab, n_tokens: int = 400, context_tokens: int = 512,
                   guidance_w: float = 1.5, seed: int = 0) -> dict:
    """Time the streaming step (grammar mask → sample → decode_one) for `n_tokens` tokens with about
    `context_tokens` tokens in the cache (cut back there whenever the cache fills). A benchmark, not a
    test: run it on a quiet machine, after its own warm-up. `decoder`: a `model.engine.Decoder`. Times in ms;
    shares are of the whole step."""
    from model.grammar import Grammar
    from model.sampling import sample
    from model.vocab import Conditions

    grammar = Grammar(vocab, allow_sampled_conditions=False)
    block = vocab.condition_ids(Conditions(vocab.genres[-1], vocab.moods[-1])) + [vocab.bar_id]
    filler = max(0, min(context_tokens, decoder.capacity - 64) - len(block))
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab.vocab_size, (filler,), generator=gen).tolist() + block  # content is moot
    logits = decoder.reanchor(prompt, guidance_w)
    anchor = decoder.length
    state = grammar.state_after(block)
    steps, decode_ms, grammar_ms, sample_ms = [], [], [], []
    for i in range(n_tokens + 20):  # the first 20 are warm-up
        t0 = time.perf_counter()
        # = sample(logits, mask=state.allowed()), with the masking timed as grammar work
        masked = logits.masked_fill(~state.allowed(), float("-inf"))
        t1 = time.perf_counter()
        token = sample(masked, temperature=1.0, generator=gen)
        t2 = time.perf_counter()
        state = state.advance(token)
        t3 = time.perf_counter()
        if decoder.length >= decoder.capacity:
            decoder.truncate(anchor)
        logits = decoder.decode_one(token, guidance_w)
        t4 = time.perf_counter()
        if i >= 20:
            steps.append(t4 - t0)
            grammar_ms.append((t1 - t0) + (t3 - t2))
            sample_ms.append(t2 - t1)
            decode_ms.append(t4 - t3)

    def pct(values, q):
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    total = sum(steps)
    return {"tokens": n_tokens, "context": anchor, "guidance": decoder.guidance,
            "tok_per_s": n_tokens / total, "step_mean_ms": 1000 * total / n_tokens,
            "step_p50_ms": pct(steps, 0.5), "step_p99_ms": pct(steps, 0.99),
            "decode_p50_ms": pct(decode_ms, 0.5), "decode_p99_ms": pct(decode_ms, 0.99),
            "grammar_share": sum(grammar_ms) / total, "sampling_share": sum(sample_ms) / total}
