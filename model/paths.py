"""Where the bundled default model lives, and how a `--model` argument names a checkpoint."""

from __future__ import annotations

from pathlib import Path

from model.errors import MoodstreamError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
CLASSIFIER_DIR = "classifier"


CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)


def resolve_model_dir(model: str | Path | None) -> Path:
    """A checkpoint directory from `--model` (a directory, or a file inside a checkpoint directory); None →
    the default. A file is accepted only where its directory holds a whole checkpoint, and a weights file
    only under the name the checkpoint loads (anything else is one error naming the file)."""
    if model is None:
        if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).is_file():
            raise MoodstreamError(
                f"no default model at {DEFAULT_MODEL_DIR}: pass --model DIR (a checkpoint from `moodstream train`)")
        return DEFAULT_MODEL_DIR
    path = Path(model)
    if path.is_file():
        directory = path.parent
        missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
        if missing:
            raise MoodstreamError(f"{path}: not part of a moodstream checkpoint ({directory} has no "
                                  f"{' or '.join(missing)}); pass --model DIR, a directory holding "
                                  f"{', '.join(CHECKPOINT_FILES)}")
        if path.suffix == Path(WEIGHTS_FILE).suffix and path.name != WEIGHTS_FILE:
            raise MoodstreamError(f"{path}: a checkpoint's weights are read from {directory / WEIGHTS_FILE}, not "
                                  f"from this file; pass --model DIR, a directory holding {', '.join(CHECKPOINT_FILES)}")
        return directory
    if not path.is_dir():
        raise MoodstreamError(f"{model}: model not found (expected a checkpoint directory)")
    return path
