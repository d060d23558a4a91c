"""Speed levers, each measured against the path we ship, in the same process (`moodstream bench --levers`).

The fused one-token step (`model.engine.FusedStep`, shipped) against `GPT.forward`; decode threads
(1 vs 2); int8 dynamic quantisation (CPU); `torch.compile` of a compile-friendly decode step
(`StaticDecodeStep`: a fixed-shape cache with one buffer per layer and the position as a tensor, as
gpt-fast does; eager `Decoder` as the reference); the guidance pair as one batched forward vs two; model
shapes (tokens/s per depth × width); MidiTok BPE over REMI (tokens per bar on a built dataset); the scheduler
thread at real-time priority against without (`--rt-priority auto` vs `off`: bare timer and send error).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.errors import MoodstreamError
from streamer.bench.decode import decode_timing, own_stream, percentile_ms

log = logging.getLogger(__name__)

DENSE_BAR_TOKENS = 420  # p99 of tokens per bar in real data (a dense bar of 4/4)
BAR_4_4_AT_120_S = 2.0  # its duration at 120 BPM
# (n_layer, n_head, n_embd); 2 x 192 is the default's shape, 3 x 160 the candidate it was chosen over
SHAPES = ((2, 2, 128), (2, 4, 192), (3, 4, 160), (4, 4, 192), (4, 4, 256), (6, 6, 384), (8, 8, 512))


def _setup(model, vocab, context: int, seed: int):
    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions

    grammar = Grammar(vocab, allow_sampled_conditions=False)
    decoder = Decoder(model)
    conditions = Conditions(vocab.genres[-1], vocab.moods[-1])
    stream = own_stream(decoder, vocab, grammar, conditions, min(context, decoder.capacity), seed)
    return decoder, grammar, stream


def threads(model, vocab, context: int, n_tokens: int, seed: int = 0) -> dict:
    """Full streaming step at `context` with 1 and with 2 torch threads."""
    decoder, grammar, stream = _setup(model, vocab, context, seed)
    before = torch.get_num_threads()
    results = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results[n] = decode_timing(decoder, grammar, stream, context, n_tokens, seed=seed)
    finally:
        torch.set_num_threads(before)
    return {"tok_s_1_thread": results[1].tok_s, "tok_s_2_threads": results[2].tok_s,
            "p99_ms_1_thread": results[1].p99_ms, "p99_ms_2_threads": results[2].p99_ms,
            "speedup_2_over_1": results[2].tok_s / results[1].tok_s}


def int8(model, vocab, context: int, n_tokens: int, seed: int = 0) -> dict:
    """Full streaming step at `context`: fp32 vs int8 dynamic-quantised Linear layers (CPU)."""
    from model.engine import Decoder
    from model.quant import quantize_int8

    decoder, grammar, stream = _setup(model, vocab, context, seed)
    fp32 = decode_timing(decoder, grammar, stream, context, n_tokens, seed=seed)
    q = decode_timing(Decoder(quantize_int8(model)), grammar, stream, context, n_tokens, seed=seed)
    return {"tok_s_fp32": fp32.tok_s, "tok_s_int8": q.tok_s, "p99_ms_fp32": fp32.p99_ms, "p99_ms_int8": q.p99_ms,
            "speedup_int8": q.tok_s / fp32.tok_s}


@torch.inference_mode()
def fused_step(model, vocab, context: int, n_tokens: int, rounds: int = 4) -> dict:
    """Model step only, with about `context` tokens cached: `Decoder.decode_one` through `FusedStep` (what
    we ship on CPU) vs through `GPT.forward`, at batch 1 and with guidance (batch 2). The two alternate for
    `rounds` rounds and each reports the median of its per-round medians (a noisy machine hits both)."""
    from model.engine import Decoder

    context = min(context, model.config.block_size - 1)
    ids = (torch.arange(context) % vocab.vocab_size).tolist()
    out = {}
    for label, guidance in (("", False), ("_guided", True)):
        decoders = {"fused": Decoder(model, guidance=guidance, vocab=vocab),
                    "forward": Decoder(model, guidance=guidance, vocab=vocab, fused=False)}
        medians: dict[str, list[float]] = {name: [] for name in decoders}
        for d in decoders.values():
            d.reanchor(ids, 1.5)
        for _ in range(rounds):
            for name, d in decoders.items():
                times = _step_times(lambda _, d=d: (d.decode_one(5, 1.5), d.truncate(context)), 0,
                                    max(16, n_tokens // rounds))
                medians[name].append(percentile_ms(times, 50))
        fused, forward = float(np.median(medians["fused"])), float(np.median(medians["forward"]))
        out.update({f"step_p50_ms_fused{label}": fused, f"step_p50_ms_forward{label}": forward,
                    f"speedup_fused{label}": forward / fused})
    return out


class StaticDecodeStep(nn.Module):
    """One-token decoding through `model`'s own modules with a fixed-shape cache: one key and one value
    buffer per layer (B, H, capacity, D), written at `pos` (a (1,) long tensor), attention over the whole
    capacity under a mask of the slots ≤ pos. Same logits as `model.engine.Decoder`; no Python int state
    changes between steps, so `torch.compile` builds one graph (gpt-fast's layout)."""

    def __init__(self, model, batch_size: int = 1, capacity: Optional[int] = None):
        super().__init__()
        self.model = model
        cfg = model.config
        self.capacity = capacity or cfg.block_size
        weight = model.wte.weight
        for i in range(cfg.n_layer):
            shape = (batch_size, cfg.n_head, self.capacity, cfg.head_dim)
            self.register_buffer(f"k{i}", torch.zeros(shape, device=weight.device, dtype=weight.dtype))
            self.register_buffer(f"v{i}", torch.zeros(shape, device=weight.device, dtype=weight.dtype))
        self.register_buffer("slots", torch.arange(self.capacity, device=weight.device))

    def forward(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """token (B, 1) ids at position pos (1,) → next-token logits (B, V)."""
        from model.gpt import apply_rotary

        m = self.model
        B = token.shape[0]
        x = m.wte(token)  # (B, 1, C)
        cos, sin = m.rope_cos[pos], m.rope_sin[pos]  # (1, D)
        mask = (self.slots <= pos).view(1, 1, 1, -1)  # (1, 1, 1, capacity)
        for i, block in enumerate(m.blocks):
            attn = block.attn
            qkv = attn.c_attn(block.ln_1(x)).view(B, 1, 3, attn.n_head, attn.head_dim).permute(2, 0, 3, 1, 4)
            qk = apply_rotary(qkv[:2], cos, sin)  # (2, B, H, 1, D)
            keys, values = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            keys[:, :, pos] = qk[1]
            values[:, :, pos] = qkv[2]
            y = F.scaled_dot_product_attention(qk[0], keys, values, attn_mask=mask)  # (B, H, 1, D)
            x = x + attn.c_proj(y.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp(block.ln_2(x))
        return F.linear(m.ln_f(x), m.wte.weight)[:, -1]  # (B, V)


def _step_times(step: Callable[[int], object], start: int, n_tokens: int, warmup: int = 16) -> list[float]:
    for i in range(warmup):
        step(start + i)
    times = []
    for i in range(n_tokens):
        t0 = time.perf_counter()
        step(start + i)
        times.append(time.perf_counter() - t0)
    return times


@torch.inference_mode()
def compile_step(model, context: int, n_tokens: int) -> dict:
    """Model step only (no sampling) with about `context` tokens cached: our eager `Decoder`, the static
    step eager, and the static step under `torch.compile` (compile time reported apart)."""
    from model.engine import Decoder

    capacity = model.config.block_size
    context = min(context, capacity - n_tokens - 16)
    ids = torch.arange(context) % model.config.vocab_size
    decoder = Decoder(model)
    decoder.reanchor(ids)
    eager = _step_times(lambda i: decoder.decode_one(5), context, n_tokens)
    static = StaticDecodeStep(model).eval()
    token = torch.tensor([[5]], device=model.wte.weight.device)
    positions = torch.arange(capacity, device=model.wte.weight.device)
    static_eager = _step_times(lambda i: static(token, positions[i:i + 1]), context, n_tokens)
    started = time.perf_counter()
    compiled = torch.compile(static, fullgraph=True)
    compiled(token, positions[:1])
    compile_s = time.perf_counter() - started
    static_compiled = _step_times(lambda i: compiled(token, positions[i:i + 1]), context, n_tokens)
    ms = {name: percentile_ms(t, 50) for name, t in
          (("decoder_eager", eager), ("static_eager", static_eager), ("static_compiled", static_compiled))}
    return {"step_p50_ms_decoder_eager": ms["decoder_eager"], "step_p50_ms_static_eager": ms["static_eager"],
            "step_p50_ms_static_compiled": ms["static_compiled"],
            "step_p99_ms_static_compiled": percentile_ms(static_compiled, 99), "compile_s": compile_s,
            "speedup_compiled_over_decoder": ms["decoder_eager"] / ms["static_compiled"]}


@torch.inference_mode()
def guidance_batching(model, vocab, context: int, n_tokens: int) -> dict:
    """Model step only, guidance on: one batched forward of 2 rows (what `Decoder(guidance=True)` does) vs
    two batch-1 forwards (the pair run one after the other)."""
    from model.engine import Decoder

    ids = (torch.arange(min(context, model.config.block_size - n_tokens - 16)) % vocab.vocab_size).tolist()
    batched = Decoder(model, guidance=True, vocab=vocab)
    cond, uncond = Decoder(model), Decoder(model)
    batched.reanchor(ids, 1.5)
    cond.reanchor(ids)
    uncond.reanchor(ids)

    def pair(_):
        c, u = cond.decode_one(5), uncond.decode_one(5)
        return u + 1.5 * (c - u)

    one = _step_times(lambda _: batched.decode_one(5, 1.5), 0, n_tokens)
    two = _step_times(pair, 0, n_tokens)
    return {"step_p50_ms_batched": percentile_ms(one, 50), "step_p50_ms_two_forwards": percentile_ms(two, 50),
            "speedup_batched": percentile_ms(two, 50) / percentile_ms(one, 50)}


def shapes(vocab, context: int, n_tokens: int, with_int8: bool = True, seed: int = 0,
           shape_list: Sequence[tuple[int, int, int]] = SHAPES,
           progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Full streaming step at `context` for randomly initialised models of each (n_layer, n_head, n_embd)
    shape (speed does not depend on the weights), fp32 and int8; with the real-time factor a dense bar
    (420 tokens, 4/4 at 120 BPM) would have at that speed."""
    from model.engine import Decoder
    from model.gpt import GPT, GPTConfig
    from model.quant import quantize_int8

    rows = []
    for n_layer, n_head, n_embd in shape_list:
        if progress is not None:
            progress(f"{n_layer}x{n_embd}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                  block_size=max(1024, context))).eval()
        decoder, grammar, stream = _setup(model, vocab, context, seed)
        fp32 = decode_timing(decoder, grammar, stream, context, n_tokens, seed=seed)
        row = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "params": model.num_params(),
               "tok_s_fp32": fp32.tok_s, "p99_ms_fp32": fp32.p99_ms,
               "dense_bar_rtf_fp32": BAR_4_4_AT_120_S * fp32.tok_s / DENSE_BAR_TOKENS}
        if with_int8:
            q = decode_timing(Decoder(quantize_int8(model)), grammar, stream, context, n_tokens, seed=seed)
            row.update({"tok_s_int8": q.tok_s, "p99_ms_int8": q.p99_ms,
                        "dense_bar_rtf_int8": BAR_4_4_AT_120_S * q.tok_s / DENSE_BAR_TOKENS})
        rows.append(row)
    return rows


def rt_priority(model, vocab, seconds: float, timer_s: float, seed: int = 0, rounds: int = 2) -> dict:
    """The scheduler thread at `--rt-priority auto` against `off` on the real clock: the bare timer (`rounds`
    alternating pairs of `timer_s` each, pooled by the median of each figure) and a `seconds` live run each
    (`streamer.bench.stream.live_run`, switches included), auto first."""
    from streamer.bench.stream import live_run, timer_error

    timers: dict[str, list] = {"auto": [], "off": []}
    for _ in range(rounds):
        for mode in timers:
            timers[mode].append(timer_error(timer_s, rt_priority=mode))
    out: dict = {}
    for mode, runs in timers.items():
        live = live_run(model, vocab, seconds, seed=seed, rt_priority=mode)
        out[mode] = {"realtime_priority": live.realtime_priority,
                     "timer_error_p50_ms": float(np.median([t.p50_ms for t in runs])),
                     "timer_error_p99_ms": float(np.median([t.p99_ms for t in runs])),
                     "timer_error_max_ms": float(max(t.max_ms for t in runs)),
                     "send_error_p50_ms": live.send_error_p50_ms, "send_error_p99_ms": live.send_error_p99_ms,
                     "send_error_max_ms": live.send_error_max_ms, "messages_sent": live.messages_sent,
                     "underruns": live.underruns, "stream_s": live.seconds}
    return out


def _bar_stats(counts: Sequence[int]) -> dict:
    a = np.asarray(counts, dtype=np.float64)
    return {"bars": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": int(a.max())}


def bpe_tokens_per_bar(dataset_dir, vocab_sizes: Sequence[int] = (1024, 2048, 4096), max_pieces: int = 1500,
                       seed: int = 0) -> dict:
    """Tokens per bar of plain REMI vs MidiTok BPE (split per bar, as MidiTok trains it) learned on up to
    `max_pieces` training pieces of a built dataset and counted on its validation pieces. The model's
    vocabulary is not changed (a copy of the tokenizer is trained)."""
    import random

    from miditok import TokSequence

    from model.vocab import Vocab
    from training.dataset import TokenDataset

    data = TokenDataset(dataset_dir)
    rng = random.Random(seed)

    def piece_bars(rows):
        out = []
        for row in rows:
            ids = np.asarray(data.tokens(row), dtype=np.int64)
            edges = list(row["bars"]) + [len(ids)]
            out.append([ids[a:b].tolist() for a, b in zip(edges[:-1], edges[1:]) if b > a])
        return out

    train_rows = list(data.pieces("train"))
    valid_rows = list(data.pieces("validation"))
    measured_on = "validation"
    if not valid_rows:  # a tiny build may have no validation split: count on the training pieces
        valid_rows, measured_on = train_rows, "train"
    if not train_rows:
        raise MoodstreamError(f"{data.dir}: the dataset has no training pieces to learn BPE from")
    rng.shuffle(train_rows)
    rng.shuffle(valid_rows)
    train_bars = piece_bars(train_rows[:max_pieces])
    valid_bars = piece_bars(valid_rows[:max(200, max_pieces // 5)])
    flat_valid = [bar for piece in valid_bars for bar in piece]
    result = {"remi": _bar_stats([len(b) for b in flat_valid]), "train_pieces": len(train_bars),
              "measured_pieces": len(valid_bars), "measured_on": measured_on}
    for size in vocab_sizes:
        tokenizer = Vocab.load(data.dir / "tokenizer.json").tokenizer  # a fresh copy for each size
        if size <= len(tokenizer):
            continue

        class _Iterator:  # per piece: one byte string per bar (MidiTok's per-bar split)
            def __len__(self):
                return len(train_bars)

            def __iter__(self):
                for piece in train_bars:
                    yield [tokenizer._ids_to_bytes(bar, as_one_str=True) for bar in piece]

        started = time.perf_counter()
        tokenizer.train(vocab_size=size, model="BPE", iterator=_Iterator())
        train_s = time.perf_counter() - started
        seqs = [TokSequence(ids=list(bar)) for bar in flat_valid]
        tokenizer.encode_token_ids(seqs)  # in place: ids become BPE ids (they decode back exactly)
        stats = _bar_stats([len(s.ids) for s in seqs])
        stats.update({"train_s": train_s, "mean_ratio_to_remi": stats["mean"] / result["remi"]["mean"],
                      "p99_ratio_to_remi": stats["p99"] / result["remi"]["p99"]})
        result[f"bpe_{size}"] = stats
    return result
