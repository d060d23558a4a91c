"""Checkpoint directories: `model.safetensors` (weights), `model.json` (GPT config, training summary,
vocabulary fingerprint) and `tokenizer.json` (`Vocab.save`).

`save_checkpoint` writes each file under a temporary name and renames it into place (model.json last).
`load_checkpoint` checks everything it reads and turns each problem into one `MoodstreamError` line that
names the file, the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from model.errors import MoodstreamError
from model.paths import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RETRAIN_HINT = "re-save it with `moodstream train` or pass another --model"


def vocab_digest(vocab) -> str:
    """sha256 of the id → token table: equal digests mean interchangeable vocabularies."""
    return hashlib.sha256(json.dumps(vocab.fingerprint()).encode()).hexdigest()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def save_checkpoint(directory: str | Path, model, vocab, summary: dict) -> Path:
    """Write `model` (weights, config), `vocab` and the JSON-serialisable `summary` into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model.config.vocab_size != vocab.vocab_size:
        raise ValueError(f"model vocab_size {model.config.vocab_size} != tokenizer {vocab.vocab_size}")
    vocab.save(directory / TOKENIZER_FILE)
    state = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": str(FORMAT_VERSION)})
    tmp.replace(weights)
    meta = {
        "format": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "vocab": {"size": vocab.vocab_size, "sha256": vocab_digest(vocab),
                  "genres": list(vocab.genres), "moods": list(vocab.moods)},
        "summary": summary,
    }
    config_path = directory / CONFIG_FILE
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(config_path)
    log.info("saved checkpoint %s", directory)
    return directory


def read_meta(directory: str | Path) -> dict:
    """The parsed `model.json` of a checkpoint directory (no torch work), with one-line errors."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MoodstreamError(f"{path}: missing from the checkpoint; {RETRAIN_HINT}")
    try:
        meta = json.loads(path.read_text())
        meta["config"], meta["vocab"]["sha256"], meta["vocab"]["size"]  # noqa: B018 (presence check)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MoodstreamError(f"{path}: unreadable JSON ({_first_line(err)}); {RETRAIN_HINT}") from err
    except (KeyError, TypeError) as err:
        raise MoodstreamError(f"{path}: not a moodstream model config (no {_first_line(err)}); "
                              f"{RETRAIN_HINT}") from err
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"):
    """Load a checkpoint directory → (model in eval mode on `device`, vocab, meta dict from model.json)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from model.gpt import GPT, GPTConfig
    from model.vocab import Vocab

    directory = Path(directory)
    if not directory.is_dir():
        raise MoodstreamError(f"{directory}: checkpoint directory not found; pass --model DIR")
    for name in (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise MoodstreamError(f"{directory / name}: missing from the checkpoint; {RETRAIN_HINT}")
    meta = read_meta(directory)
    config_path = directory / CONFIG_FILE
    try:
        config = GPTConfig.from_dict(meta["config"])
    except (MoodstreamError, TypeError) as err:
        raise MoodstreamError(f"{config_path}: bad model config ({_first_line(err)}); {RETRAIN_HINT}") from err
    vocab = Vocab.load(directory / TOKENIZER_FILE)
    tokenizer_path = directory / TOKENIZER_FILE
    if vocab_digest(vocab) != meta["vocab"]["sha256"] or vocab.vocab_size != meta["vocab"]["size"]:
        raise MoodstreamError(f"{tokenizer_path}: vocabulary does not match the one the model was trained "
                              f"with ({vocab.vocab_size} vs {meta['vocab']['size']} tokens or different "
                              f"tokens); restore that file from the training run")
    if config.vocab_size != vocab.vocab_size:
        raise MoodstreamError(f"{config_path}: model vocab_size {config.vocab_size} != tokenizer's "
                              f"{vocab.vocab_size}; {RETRAIN_HINT}")

    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise MoodstreamError(f"{weights_path}: corrupt or truncated weights ({_first_line(err)}); "
                              f"{RETRAIN_HINT}") from err
    model = GPT(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise MoodstreamError(f"{weights_path}: missing tensors {shown}; {RETRAIN_HINT}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise MoodstreamError(f"{weights_path}: unexpected tensors {', '.join(unexpected[:3])} "
                              f"(weights from another model?); {RETRAIN_HINT}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            what = "vocabulary size" if name == "wte.weight" else "shape"
            raise MoodstreamError(f"{weights_path}: {name} has {what} {tuple(state[name].shape)}, config says "
                                  f"{tuple(tensor.shape)}; {RETRAIN_HINT}")
    model.load_state_dict(state)
    return model.to(device).eval(), vocab, meta
