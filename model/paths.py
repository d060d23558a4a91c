"""Where the bundled default model lives, and how a `--model` argument names a checkpoint."""

from __future__ import annotations

from pathlib import Path

from model.errors import MoodstreamError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
CLASSIFIER_DIR = "classifier"


def resolve_model_dir(model: str | Path | None) -> Path:
    """A checkpoint directory from `--model` (a directory or any file inside it); None → the default."""
    if model is None:
        if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).is_file():
            raise MoodstreamError(
                f"no default model at {DEFAULT_MODEL_DIR}: pass --model DIR (a checkpoint from `moodstream train`)")
        return DEFAULT_MODEL_DIR
    path = Path(model)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise MoodstreamError(f"{model}: model not found (expected a checkpoint directory)")
    return path
