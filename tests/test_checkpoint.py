"""Checkpoint directories: save → load round trip, and one clear error line per kind of damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, read_meta, save_checkpoint
from model.errors import MoodstreamError
from model.gpt import GPT, GPTConfig
from model.vocab import Vocab



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture
def checkpoint(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the session's tiny checkpoint, free to damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "ckpt"))


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0]


def test_round_trip_keeps_weights_config_vocab_and_summary(tmp_path, vocab):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=128))
    summary = {"step": 7, "val_loss": 3.25, "dataset": "somewhere"}
    save_checkpoint(tmp_path / "run", model, vocab, summary)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.json", "model.safetensors",
                                                                      "tokenizer.json"]  # no temp files left
    loaded, loaded_vocab, meta = load_checkpoint(tmp_path / "run")
    assert loaded.config == model.config and not loaded.training
    assert loaded_vocab.fingerprint() == vocab.fingerprint()
    assert loaded_vocab.genres == vocab.genres and loaded_vocab.moods == vocab.moods
    assert meta["summary"] == summary
    ids = [vocab.genre_ids["rock"], vocab.mood_ids["calm"], vocab.bar_id, 10, 20, 30]
    assert torch.equal(logits_of(model.eval(), ids), logits_of(loaded, ids))


def test_saving_again_overwrites_in_place(checkpoint, vocab):
    model, _, _ = load_checkpoint(checkpoint)
    save_checkpoint(checkpoint, model, vocab, {"step": 2})
    assert read_meta(checkpoint)["summary"] == {"step": 2}


def test_tiny_model_fixture_is_a_loadable_two_by_64_model(tiny_model_dir, vocab):
    model, loaded_vocab, _ = load_checkpoint(tiny_model_dir)
    assert (model.config.n_layer, model.config.n_embd) == (2, 64)
    assert model.config.vocab_size == vocab.vocab_size == loaded_vocab.vocab_size


def load_error(directory) -> str:
    with pytest.raises(MoodstreamError) as info:
        load_checkpoint(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_directory(tmp_path):
    message = load_error(tmp_path / "nope")
    assert "nope" in message and "not found" in message


@pytest.mark.parametrize("name", ["model.safetensors", "model.json", "tokenizer.json"])
def test_missing_file(checkpoint, name):
    (checkpoint / name).unlink()
    message = load_error(checkpoint)
    assert name in message and "missing" in message


def test_truncated_weights(checkpoint):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = load_error(checkpoint)
    assert "model.safetensors" in message and "corrupt or truncated" in message


def test_garbage_weights(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(b"\x00\x01 this is not a safetensors file" * 10)
    message = load_error(checkpoint)
    assert "model.safetensors" in message and "corrupt or truncated" in message


def test_unreadable_json(checkpoint):
    (checkpoint / "model.json").write_text('{"config": {"vocab_size": 5')
    message = load_error(checkpoint)
    assert "model.json" in message and "unreadable JSON" in message


def test_json_without_config(checkpoint):
    (checkpoint / "model.json").write_text('{"summary": {}}')
    message = load_error(checkpoint)
    assert "model.json" in message and "not a moodstream model config" in message


def test_bad_config_values(checkpoint):
    meta = json.loads((checkpoint / "model.json").read_text())
    meta["config"]["n_embd"] = 63
    (checkpoint / "model.json").write_text(json.dumps(meta))
    message = load_error(checkpoint)
    assert "model.json" in message and "n_embd" in message


def test_tokenizer_from_another_vocabulary(checkpoint):
    Vocab.create(genres=("pop", "rock"), moods=("happy",)).save(checkpoint / "tokenizer.json")
    message = load_error(checkpoint)
    assert "tokenizer.json" in message and "does not match" in message


def test_tokenizer_with_same_size_but_other_tokens(checkpoint, vocab):
    renamed = tuple("x" + g for g in vocab.genres[1:])
    other = Vocab.create(genres=renamed, moods=vocab.moods[1:])
    assert other.vocab_size == vocab.vocab_size
    other.save(checkpoint / "tokenizer.json")
    message = load_error(checkpoint)
    assert "tokenizer.json" in message and "does not match" in message


def test_weights_with_another_embedding_size(checkpoint, vocab):
    from safetensors.torch import load_file, save_file

    path = checkpoint / "model.safetensors"
    state = load_file(str(path))
    state["wte.weight"] = torch.zeros(vocab.vocab_size + 3, 64)
    save_file(state, str(path))
    message = load_error(checkpoint)
    assert "model.safetensors" in message and "wte.weight" in message and "vocabulary size" in message


def test_weights_missing_tensor_keys(checkpoint):
    from safetensors.torch import load_file, save_file

    path = checkpoint / "model.safetensors"
    state = load_file(str(path))
    del state["blocks.1.mlp.c_fc.weight"]
    save_file(state, str(path))
    message = load_error(checkpoint)
    assert "model.safetensors" in message and "blocks.1.mlp.c_fc.weight" in message and "missing" in message


def test_save_refuses_a_model_built_for_another_vocabulary(tmp_path, vocab):
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size + 1, n_layer=1, n_head=2, n_embd=32, block_size=16))
    with pytest.raises(ValueError, match="vocab_size"):
        save_checkpoint(tmp_path / "bad", model, vocab, {})
