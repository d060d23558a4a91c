"""Shared fixtures: where the real data lives, a vocabulary, a scratch dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _find_shared_data() -> Path:
    env = os.environ.get("MOODSTREAM_DATA")
    if env:
        return Path(env)
    for parent in REPO.parents:
        candidate = parent / "shared" / "data"
        if (candidate / "manifest.csv").is_file():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.fail(f"real data not found at {SHARED_DATA}; set MOODSTREAM_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vocab():
    from model.vocab import Vocab

    return Vocab.create()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, vocab) -> Path:
    """A real, randomly initialised GPT (2 layers × 64 wide, seed 0) saved as a checkpoint directory
    with the default vocabulary. Treat it as read-only: it is shared by the whole session."""
    import torch

    from model.checkpoint import save_checkpoint
    from model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=512))
    directory = tmp_path_factory.mktemp("tiny_model")
    save_checkpoint(directory, model, vocab, {"note": "random init, seed 0 (test fixture)"})
    return directory


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and the machine is shared (modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
