"""int8 dynamic quantisation for CPU decoding: every nn.Linear gets int8 weights (per-tensor scale) and
quantises its activations on the fly; embeddings, norms and the tied head stay fp32.

Worth it from width 256 up (the matrix products dominate there); at width 192 the quantise/dequantise
overhead costs more than it saves. Validation NLL stays within 1 % of fp32 (figures in the model-core
note). Uses `torch.ao.quantization.quantize_dynamic`, deprecated in favour of torchao but present and
working in torch 2.13; its deprecation warning is silenced here.
"""

from __future__ import annotations

import logging
import warnings

import torch

log = logging.getLogger(__name__)


def quantize_int8(model):
    """A new model (the argument is left as it was) whose Linear layers run in int8; CPU only."""
    from torch.ao.quantization import quantize_dynamic

    if model.wte.weight.device.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on CPU only; move the model to CPU first")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    log.info("quantised %d Linear layers to int8", sum(isinstance(m, torch.nn.Linear) for m in model.modules()))
    return quantized.eval()


def is_quantized(model) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
