"""The one-token decoding step as one compiled function (Numba), for `model.engine.FusedStep`.

A batch-1 step of a small model is a few dozen tiny operations; called one by one from Python (NumPy or
torch) each pays its call overhead, and that overhead was about half of the step. Compiled into one
function the step pays it once and keeps the rest close to memory speed: the weights (4.5 MB at the
default size) and the cached keys/values are each read once per token. With two rows (guidance) each
weight row is read once for both. The function releases the GIL, so the scheduler's thread can send
MIDI while the generator's thread is in it. Compiled on first use and cached on disk (`cache=True`).

Layout (see `FusedStep`): matrices are (out, in), as torch's Linear weights; `w_qkv` (L, 5C, C) gives q,
k, v and the rotary "rotate_half" of q and k; LayerNorm gains are folded into the matrix after each norm;
`cos`/`sin` are one position's rotary row for q then k, with 1/√D folded into q's half. `kv` is the
`KVCache` tensor's memory, (L, 2, B, H, capacity, D).

exp (softmax, GELU) is 2^n · 2^f with n whole and |f| ≤ ½: a polynomial for 2^f (relative error < 4e-7)
and the exponent bits for 2^n, so that its loops vectorise (libm's exp does not). Arguments are clamped
to [-87, 87]: e^-87 is as good as zero beside any float32 sum of ones, and e^87 does not overflow.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GELU_C = math.sqrt(2.0 / math.pi)
_LOG2_E = 1.0 / math.log(2.0)
_OPTIONS = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")


@njit(**_OPTIONS)
def _matvec(xs, w, out, accumulate):
    """out[b] (+)= w @ xs[b] for each row b, with `w` laid out (out, in): every output is a dot product
    over a contiguous row of `w`. Four outputs per pass for one row, two for two rows (guidance): each
    row of `w` is read once for every row of `xs`, and the sums stay in registers."""
    m, n = w.shape
    if xs.shape[0] == 2:
        x0, x1 = xs[0], xs[1]
        j = 0
        while j + 2 <= m:
            w0, w1 = w[j], w[j + 1]
            s00 = s01 = s10 = s11 = np.float32(0.0)
            for i in range(n):
                s00 += w0[i] * x0[i]
                s01 += w0[i] * x1[i]
                s10 += w1[i] * x0[i]
                s11 += w1[i] * x1[i]
            if accumulate:
                out[0, j] += s00
                out[1, j] += s01
                out[0, j + 1] += s10
                out[1, j + 1] += s11
            else:
                out[0, j], out[1, j], out[0, j + 1], out[1, j + 1] = s00, s01, s10, s11
            j += 2
        if j < m:  # an odd row left
            for b in range(2):
                s = np.float32(0.0)
                for i in range(n):
                    s += w[j, i] * xs[b, i]
                out[b, j] = out[b, j] + s if accumulate else s
        return
    for b in range(xs.shape[0]):
        x = xs[b]
        j = 0
        while j + 4 <= m:
            w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for i in range(n):
                s0 += w0[i] * x[i]
                s1 += w1[i] * x[i]
                s2 += w2[i] * x[i]
                s3 += w3[i] * x[i]
            if accumulate:
                out[b, j] += s0
                out[b, j + 1] += s1
                out[b, j + 2] += s2
                out[b, j + 3] += s3
            else:
                out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s0, s1, s2, s3
            j += 4
        while j < m:
            s = np.float32(0.0)
            for i in range(n):
                s += w[j, i] * x[i]
            out[b, j] = out[b, j] + s if accumulate else s
            j += 1


@njit(**_OPTIONS)
def _norm(x, out, eps):
    """LayerNorm of each row without its gain (folded into the next matrix)."""
    n = x.shape[1]
    for b in range(x.shape[0]):
        mean = np.float32(0.0)
        for j in range(n):
            mean += x[b, j]
        mean /= n
        var = np.float32(0.0)
        for j in range(n):
            d = x[b, j] - mean
            var += d * d
        scale = np.float32(1.0 / math.sqrt(var / n + eps))
        for j in range(n):
            out[b, j] = (x[b, j] - mean) * scale


@njit(**_OPTIONS)
def _exp(values, bits):
    """values[i] = e^values[i] in place, for every i (see the module docstring); `bits` is int32 scratch
    at least as long as `values`."""
    n = values.shape[0]
    for i in range(n):
        y = min(max(values[i], np.float32(-87.0)), np.float32(87.0)) * np.float32(_LOG2_E)
        whole = np.floor(y + np.float32(0.5))
        f = y - whole
        values[i] = np.float32(1.0) + f * (np.float32(0.693147) + f * (np.float32(0.24022225) + f * (
            np.float32(0.055507123) + f * (np.float32(0.0096701756) + f * np.float32(0.0013260922)))))
        bits[i] = (np.int32(whole) + np.int32(127)) << np.int32(23)  # the float32 2^whole
    powers = bits[:n].view(np.float32)
    for i in range(n):
        values[i] *= powers[i]


@njit(**_OPTIONS)
def _attend(q, keys, values, length, scores, bits, out):
    """out = softmax(keys[:length] @ q) @ values[:length] for one head (q already scaled); keys (through
    `_matvec`: each key row is a weight row) and values are read four positions per pass."""
    D = q.shape[0]
    _matvec(q[None, :], keys[:length], scores[None, :length], False)
    weights = scores[:length]
    top = weights[0]
    for t in range(length):
        top = max(top, weights[t])
    for t in range(length):
        weights[t] -= top
    _exp(weights, bits)
    total = np.float32(0.0)
    for t in range(length):
        total += weights[t]
    inverse = np.float32(1.0) / total
    for t in range(length):
        weights[t] *= inverse
    out[:] = 0.0
    t = 0
    while t + 4 <= length:
        p0, p1, p2, p3 = scores[t], scores[t + 1], scores[t + 2], scores[t + 3]
        v0, v1, v2, v3 = values[t], values[t + 1], values[t + 2], values[t + 3]
        for d in range(D):
            out[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
        t += 4
    for t in range(t, length):
        for d in range(D):
            out[d] += scores[t] * values[t, d]


@njit(**_OPTIONS)
def decode_step(ids, wte, w_qkv, w_o, w_fc, w_mlp, head, cos, sin, kv, pos, eps, n_head,
                x, xn, h, attended, u, xn_wide, scores, bits, logits):
    """Feed `ids` (one per row) at position `pos`: write their keys/values into `kv` at `pos` and the
    next-token logits into `logits` (B, V). `x` … `scores` are float32 scratch of shapes (B, C), (B, C),
    (B, 5C), (B, C), (B, 4C), (B, 4C), (capacity,); `bits` int32 scratch of max(capacity, 4C)."""
    C = wte.shape[1]
    D = C // n_head
    for b in range(ids.shape[0]):
        x[b, :] = wte[ids[b]]
    for layer in range(w_qkv.shape[0]):
        _norm(x, xn, eps)
        _matvec(xn, w_qkv[layer], h, False)  # q, k, v, rot(q), rot(k)
        for b in range(ids.shape[0]):
            row = h[b]
            for j in range(2 * C):  # RoPE on q and k
                row[j] = row[j] * cos[j] + row[3 * C + j] * sin[j]
            for hd in range(n_head):
                keys, values = kv[layer, 0, b, hd], kv[layer, 1, b, hd]
                keys[pos, :] = row[C + hd * D:C + (hd + 1) * D]
                values[pos, :] = row[2 * C + hd * D:2 * C + (hd + 1) * D]
                _attend(row[hd * D:(hd + 1) * D], keys, values, pos + 1, scores, bits,
                        attended[b, hd * D:(hd + 1) * D])
        _matvec(attended, w_o[layer], x, True)  # x + attn
        _norm(x, xn, eps)
        _matvec(xn, w_fc[layer], u, False)
        for b in range(ids.shape[0]):  # GELU, tanh form: 0.5·u·(1 + tanh(z)) = u / (1 + e^(-2z))
            row = u[b]
            gate = xn_wide[b]
            for j in range(row.shape[0]):
                v = row[j]
                gate[j] = np.float32(-2.0 * _GELU_C) * (v + np.float32(0.044715) * v * v * v)
            _exp(gate, bits)
            for j in range(row.shape[0]):
                row[j] /= np.float32(1.0) + gate[j]
        _matvec(u, w_mlp[layer], x, True)  # x + mlp
    _norm(x, xn, eps)
    _matvec(xn, head, logits, False)


@njit(cache=True, nogil=True)  # IEEE maths: logits may hold ±inf
def draw(values, mask, temperature, top_k, top_p, u):
    """`model.sampling.sample` after its checks: the allowed tokens of `values` (V,) float32 (`mask` (V,)
    bool, or an empty array for all), ranked best first (stable: ties keep id order), scaled by 1/`temperature`,
    cut to `top_k` (ties at the k-th kept) and to the `top_p` nucleus, then the token whose cumulative share
    first exceeds `u` ∈ [0, 1) of the kept mass. Temperature 0: the first best allowed token. Returns an id,
    or -1 when no token is allowed. Float64 throughout, as the NumPy version it replaces."""
    if mask.size:
        ids = np.flatnonzero(mask)
    else:
        ids = np.arange(values.size)
    if ids.size == 0:
        return -1
    allowed = values[ids].astype(np.float64)
    if temperature == 0.0:
        return ids[np.argmax(allowed)]
    order = np.argsort(-allowed, kind="mergesort")
    ranked = allowed[order] / temperature
    kept = ranked.size
    if 0 < top_k < kept:
        kth = ranked[top_k - 1]
        kept = top_k
        while kept < ranked.size and ranked[kept] == kth:
            kept += 1
    probs = np.exp(ranked[:kept] - ranked[0])
    probs /= probs.sum()
    if top_p < 1.0:
        before = 0.0
        nucleus = 0
        while nucleus < kept and before < top_p:  # mass ranked above each token < top_p
            before += probs[nucleus]
            nucleus += 1
        kept = max(1, nucleus)
    cumulative = np.cumsum(probs[:kept])
    target = u * cumulative[-1]
    choice = np.searchsorted(cumulative, target, side="right")
    return ids[order[min(choice, kept - 1)]]
