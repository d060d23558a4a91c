"""The GPT and its KV-cache decoding: cached logits equal the full forward, also after truncate/reanchor;
guidance; training loss; config validation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from model.engine import Decoder, unconditioned_map
from model.errors import MoodstreamError
from model.gpt import GPT, GPTConfig
from model.vocab import Conditions


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4


def sharp_model(vocab_size: int, seed: int = 0, **overrides) -> GPT:
    """A tiny GPT with large random weights, so attention depends strongly on context and position
    (at the default 0.02 init every logit is near zero and a broken cache would hide in the noise)."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=256)
    model = GPT(GPTConfig(**{**cfg, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.25)
    return model.eval()


def full_logits(model: GPT, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return logits[0]  # (T, V)


def decode_all(decoder: Decoder, ids: list[int], prefill_len: int) -> torch.Tensor:
    """Logits after each token of `ids`: prefill the first `prefill_len`, then one token at a time."""
    out = [decoder.prefill(ids[:prefill_len])]
    for token in ids[prefill_len:]:
        out.append(decoder.decode_one(token))
    return torch.stack(out)  # (T - prefill_len + 1, V)


@pytest.fixture(scope="module")
def model(vocab):
    return sharp_model(vocab.vocab_size)


def random_ids(n: int, vocab_size: int, seed: int) -> list[int]:
    return torch.randint(0, vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_logits_depend_on_context(model, vocab):
    """The test model is sensitive: the same token after a different prefix gives different logits."""
    a = random_ids(40, vocab.vocab_size, 1)
    b = random_ids(39, vocab.vocab_size, 2) + [a[-1]]
    assert (full_logits(model, a)[-1] - full_logits(model, b)[-1]).abs().max() > 100 * TOL


def test_cached_decoding_equals_full_forward_at_every_position(model, vocab):
    ids = random_ids(200, vocab.vocab_size, 3)
    full = full_logits(model, ids)
    for prefill_len in (1, 17):
        cached = decode_all(Decoder(model), ids, prefill_len)
        assert (cached - full[prefill_len - 1:]).abs().max().item() <= TOL


def test_chunked_prefill_after_a_prefix_equals_full_forward(model, vocab):
    ids = random_ids(120, vocab.vocab_size, 4)
    full = full_logits(model, ids)
    decoder = Decoder(model)
    decoder.prefill(ids[:50])
    logits = decoder.prefill(ids[50:90])  # T > 1 on top of a prefix: the offset causal mask
    assert (logits - full[89]).abs().max().item() <= TOL
    assert decoder.length == 90
    for t in range(90, 120):
        logits = decoder.decode_one(ids[t])
        assert (logits - full[t]).abs().max().item() <= TOL


def test_truncate_then_continue_equals_full_forward_of_the_new_sequence(model, vocab):
    first = random_ids(150, vocab.vocab_size, 5)
    decoder = Decoder(model)
    decode_all(decoder, first, 10)
    decoder.truncate(60)  # throw away tokens 60..149 (e.g. bars generated but never played)
    assert decoder.length == 60
    branch = random_ids(80, vocab.vocab_size, 6)
    new_ids = first[:60] + branch
    full = full_logits(model, new_ids)
    cached = torch.stack([decoder.decode_one(t) for t in branch])
    assert (cached - full[60:]).abs().max().item() <= TOL


def test_reanchor_equals_full_forward_from_position_zero(model, vocab):
    decoder = Decoder(model)
    decode_all(decoder, random_ids(180, vocab.vocab_size, 7), 100)
    anchor = random_ids(30, vocab.vocab_size, 8)
    more = random_ids(40, vocab.vocab_size, 9)
    full = full_logits(model, anchor + more)
    first = decoder.reanchor(anchor)
    assert decoder.length == 30
    assert (first - full[29]).abs().max().item() <= TOL
    cached = torch.stack([decoder.decode_one(t) for t in more])
    assert (cached - full[30:]).abs().max().item() <= TOL


def test_decoder_refuses_to_overflow_its_capacity(vocab):
    model = sharp_model(vocab.vocab_size, block_size=32)
    decoder = Decoder(model)
    assert decoder.capacity == 32
    decoder.prefill(random_ids(31, vocab.vocab_size, 10))
    decoder.decode_one(3)
    with pytest.raises(ValueError, match="reanchor"):
        decoder.decode_one(3)
    with pytest.raises(ValueError, match="reanchor"):
        decoder.prefill([1, 2])
    decoder.truncate(10)
    decoder.decode_one(3)  # room again
    with pytest.raises(ValueError):
        decoder.truncate(12)  # cannot grow by truncating


def conditioned_ids(vocab, n: int, seed: int) -> list[int]:
    """A sequence whose conditioning block is real genre/mood ids (not `any`)."""
    return [vocab.genre_ids["jazz"], vocab.mood_ids["sad"]] + random_ids(n, vocab.vocab_size, seed)


def test_guidance_weight_one_equals_plain_conditional_logits(model, vocab):
    ids = conditioned_ids(vocab, 60, 11)
    plain = decode_all(Decoder(model), ids, 5)
    guided = decode_all(Decoder(model, guidance=True, vocab=vocab), ids, 5)
    assert (guided - plain).abs().max().item() <= TOL


def test_guidance_mixes_conditional_and_unconditional_streams(model, vocab):
    ids = conditioned_ids(vocab, 60, 12)
    uncond_ids = unconditioned_map(vocab)[torch.tensor(ids)].tolist()
    assert uncond_ids[:2] == [vocab.null_genre_id, vocab.null_mood_id]
    assert vocab.has_null and vocab.null_genre_id != vocab.genre_ids["any"]
    assert all(u == t for u, t in zip(uncond_ids, ids) if not vocab.is_condition(t))
    cond = decode_all(Decoder(model), ids, 5)
    uncond = decode_all(Decoder(model), uncond_ids, 5)
    assert (cond - uncond).abs().max() > 100 * TOL  # the conditions matter to this model
    guided = Decoder(model, guidance=True, vocab=vocab)
    weights = [0.0, 2.5, 1.0, 4.0]  # w may change from token to token
    out = [guided.prefill(ids[:5], guidance_w=weights[0])]
    for i, token in enumerate(ids[5:], start=1):
        out.append(guided.decode_one(token, guidance_w=weights[i % len(weights)]))
    for i, logits in enumerate(out):
        w = weights[i % len(weights)]
        assert (logits - (uncond[i] + w * (cond[i] - uncond[i]))).abs().max().item() <= 10 * TOL


def test_a_negative_row_replaces_the_unconditioned_one(model, vocab):
    """`negative` is what the guidance row reads: the old conditions give old + w·(new − old)."""
    ids = conditioned_ids(vocab, 60, 13)
    old = [vocab.genre_ids["rock"], vocab.mood_ids["happy"]] + ids[2:]
    cond = decode_all(Decoder(model), ids, 5)
    negative = decode_all(Decoder(model), old, 5)
    w = 2.0
    guided = Decoder(model, guidance=True, vocab=vocab)
    out = [guided.prefill(ids[:5], w, negative=old[:5])]
    out += [guided.decode_one(t, w, negative=o) for t, o in zip(ids[5:], old[5:])]
    expected = negative + w * (cond - negative)
    assert (torch.stack(out) - expected).abs().max().item() <= 10 * TOL
    default = Decoder(model, guidance=True, vocab=vocab)
    assert (default.prefill(ids[:5], w) - default.reanchor(ids[:5], w, guided.unconditioned(ids[:5]))).abs().max() == 0
    with pytest.raises(ValueError, match="negative"):
        default.prefill(ids[:5], w, negative=old[:4])


def test_guidance_needs_the_vocabulary(model):
    with pytest.raises(ValueError, match="vocab"):
        Decoder(model, guidance=True)


def test_training_forward_loss_ignores_minus_one_and_reaches_every_parameter(vocab):
    model = sharp_model(vocab.vocab_size).train()
    idx = torch.randint(0, vocab.vocab_size, (3, 24), generator=torch.Generator().manual_seed(13))
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -1
    logits, loss = model(idx, targets=targets)
    assert logits.shape == (3, 24, vocab.vocab_size)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, vocab.vocab_size), targets[:, :-1].reshape(-1))
    assert abs(loss.item() - expected.item()) < 1e-5
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    _, no_loss = model(idx)
    assert no_loss is None


def test_head_is_tied_to_the_embedding(vocab):
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16))
    state = model.state_dict()
    assert [k for k in state if state[k].shape[0] == vocab.vocab_size] == ["wte.weight"]
    assert not any("rope" in k for k in state)  # rotary tables are rebuilt, never saved


@pytest.mark.parametrize("field, value", [("n_embd", 63), ("n_head", 0), ("vocab_size", 0),
                                          ("dropout", 1.0), ("block_size", -1)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    kwargs = dict(vocab_size=100, n_layer=2, n_head=2, n_embd=64)
    kwargs[field] = value
    with pytest.raises(MoodstreamError, match=field):
        GPTConfig(**kwargs)


def test_forward_refuses_sequences_longer_than_block_size(vocab):
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_int8_decoding_stays_close_to_fp32(model, vocab):
    """Dynamic int8 scales activations per call, so int8 logits are not bit-stable between a full
    forward and one-token steps; what must hold is that int8 decoding predicts like fp32 decoding."""
    from model.quant import is_quantized, quantize_int8

    q = quantize_int8(model)
    assert is_quantized(q) and not is_quantized(model)  # the fp32 model is left as it was
    ids = random_ids(100, vocab.vocab_size, 14)
    fp32 = torch.log_softmax(decode_all(Decoder(model), ids, 10), -1)
    int8 = torch.log_softmax(decode_all(Decoder(q), ids, 10), -1)
    kl = (fp32.exp() * (fp32 - int8)).sum(-1).mean().item()  # this sharp model: ≈ 0.008 nats
    assert kl < 0.05
    assert (fp32.argmax(-1) == int8.argmax(-1)).float().mean().item() > 0.8


def test_prepare_for_decoding_on_cpu(vocab):
    from model.engine import prepare_for_decoding
    from model.quant import is_quantized

    threads = torch.get_num_threads()
    try:
        fresh = sharp_model(vocab.vocab_size).train()
        prepared = prepare_for_decoding(fresh, "cpu")
        assert not prepared.training and torch.get_num_threads() == 1
        assert is_quantized(prepare_for_decoding(fresh, "cpu", int8=True))
        with pytest.raises(ValueError, match="CPU"):
            prepare_for_decoding(fresh, "cuda", int8=True)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("guidance", [False, True])
def test_measure_decode_reports_every_figure(model, vocab, guidance):
    from streamer.bench.decode import measure_decode

    report = measure_decode(Decoder(model, guidance=guidance, vocab=vocab), vocab, n_tokens=60, context_tokens=200)
    assert report["tokens"] == 60 and report["guidance"] is guidance
    assert 190 <= report["context"] <= 200  # the prompt fits below block_size 256 minus headroom
    assert 0 < report["step_p50_ms"] <= report["step_p99_ms"]
    assert 0 < report["grammar_share"] < 1 and 0 < report["sampling_share"] < 1


def test_fused_step_equals_the_model_forward_with_and_without_guidance(model, vocab):
    """`Decoder.decode_one` runs `FusedStep` on CPU; it must give what `GPT.forward` gives, also after a
    truncate and at batch 2 (guidance)."""
    ids = conditioned_ids(vocab, 150, 13)
    more = random_ids(30, vocab.vocab_size, 14)
    for guidance in (False, True):
        fused = Decoder(model, guidance=guidance, vocab=vocab)
        plain = Decoder(model, guidance=guidance, vocab=vocab, fused=False)
        assert fused.fused and not plain.fused
        assert (decode_all(fused, ids, 3) - decode_all(plain, ids, 3)).abs().max().item() <= TOL
        fused.truncate(40)
        plain.truncate(40)
        a = torch.stack([fused.decode_one(t, 2.0) for t in more])
        b = torch.stack([plain.decode_one(t, 2.0) for t in more])
        assert (a - b).abs().max().item() <= TOL
        assert fused.length == plain.length == 70


@pytest.mark.parametrize("spread", [1.0, 30.0, 400.0])
def test_compiled_attention_equals_softmax_attention(spread):
    """The compiled step's attention (4 positions per pass, exp from a polynomial and exponent bits) gives
    softmax attention, from flat scores to scores hundreds apart (underflow), at lengths that are and are
    not a multiple of 4."""
    import numpy as np

    from model.kernels import _attend

    gen = torch.Generator().manual_seed(int(spread))
    for length in (1, 7, 64, 301):
        q = torch.randn(48, generator=gen) * spread / 48 ** 0.5
        keys, values = torch.randn(length, 48, generator=gen), torch.randn(length, 48, generator=gen)
        expected = torch.softmax((keys.double() @ q.double()), dim=0) @ values.double()
        out = np.empty(48, dtype=np.float32)
        _attend(q.numpy(), keys.numpy(), values.numpy(), length, np.empty(length, dtype=np.float32),
                np.empty(length, dtype=np.int32), out)
        assert torch.allclose(torch.from_numpy(out).double(), expected, atol=1e-5, rtol=1e-4), (spread, length)


def test_compiled_exp_matches_exp_and_clamps_at_87():
    """The compiled step's exp (a polynomial and exponent bits, for softmax and GELU) against NumPy's, with
    arguments past ±87 clamped there (no overflow, no zero)."""
    import numpy as np

    from model.kernels import _exp

    x = np.concatenate([np.linspace(-100.0, 100.0, 20001), [0.0, -0.5, 0.5, 86.9, -86.9]]).astype(np.float32)
    got = x.copy()
    _exp(got, np.empty(x.size, dtype=np.int32))
    expected = np.exp(np.clip(x.astype(np.float64), -87.0, 87.0))
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    assert np.max(np.abs(got / expected - 1.0)) < 1e-5  # float32 rounding of x·log2(e) near ±87: ~5e-6


def test_fused_step_refuses_ids_outside_the_vocabulary(model, vocab):
    """The compiled step reads embedding rows unchecked, so the ids are checked before it."""
    decoder = Decoder(model)
    decoder.prefill([vocab.bar_id])
    for bad in (-1, model.config.vocab_size):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            decoder.decode_one(bad)
    assert decoder.length == 1


def test_int8_models_decode_through_the_model_forward(model):
    from model.quant import quantize_int8

    assert not Decoder(quantize_int8(model)).fused


@pytest.mark.parametrize("guidance", [False, True])
def test_slide_equals_a_fresh_prefill_for_a_one_layer_model(vocab, guidance):
    """In one layer a token's key and value depend only on the token and its position, so sliding the kept
    tokens (one more rotary turn, no forward) must give what prefilling lead + kept + pending from scratch
    gives — with the lead shorter than the dropped part (keys turned back) and longer (turned forward)."""
    model = sharp_model(vocab.vocab_size, seed=3, n_layer=1)
    ids = conditioned_ids(vocab, 120, 15)
    lead = vocab.condition_ids(Conditions(vocab.genres[1], vocab.moods[1]))
    for start, lead_ids in ((70, lead), (1, lead + lead)):
        slid = Decoder(model, guidance=guidance, vocab=vocab)
        slid.prefill(ids[:100])
        got = slid.slide(start, lead_ids, ids[100:103], 2.0)
        fresh = Decoder(model, guidance=guidance, vocab=vocab)
        want = fresh.reanchor(lead_ids + ids[start:103], 2.0)
        assert slid.length == fresh.length == len(lead_ids) + 103 - start
        assert (got - want).abs().max().item() <= TOL
        more = random_ids(10, vocab.vocab_size, 16)
        a = torch.stack([slid.decode_one(t, 2.0) for t in more])
        b = torch.stack([fresh.decode_one(t, 2.0) for t in more])
        assert (a - b).abs().max().item() <= TOL


def test_slide_keeps_what_the_kept_tokens_saw_in_a_deeper_model(model, vocab):
    """From two layers on, the kept tokens' keys remember the dropped context: slide differs from a fresh
    prefill, yet stays closer to it than a cache that forgot the rotary turn does."""
    ids = conditioned_ids(vocab, 160, 17)
    lead = ids[:2]
    slid = Decoder(model)
    slid.prefill(ids[:150])
    got = slid.slide(80, lead, ids[150:152])
    want = Decoder(model).reanchor(lead + ids[80:152])
    unturned = Decoder(model)
    unturned.prefill(ids[:150])
    unturned.cache.kv[:, :, :, :, 2:72] = unturned.cache.kv[:, :, :, :, 80:150].clone()  # moved, not turned
    unturned.cache.length = 72
    broken = unturned.prefill(ids[150:152])
    assert (got - want).abs().max().item() > TOL
    assert (got - want).abs().mean() < (broken - want).abs().mean()


def test_slide_rejects_what_does_not_fit(model, vocab):
    decoder = Decoder(model)
    decoder.prefill(list(range(10)))
    with pytest.raises(ValueError, match="keep the cache from token 11"):
        decoder.slide(11, [], [1])
    with pytest.raises(ValueError, match="at least one pending token"):
        decoder.slide(5, [], [])
    with pytest.raises(ValueError, match="overflow"):
        decoder.slide(0, [], list(range(decoder.capacity)))
