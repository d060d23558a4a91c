"""`moodstream evaluate` end to end on a tiny real manifest with a tiny real model, plus the pieces it
rests on: the scored tokens, sliding-window likelihoods, guided grammar-constrained generation with a
switch, and re-anchoring the context."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from streamer.cli import main
from training.evaluate import (RATE_KEYS, Switch, _reanchor_ids, bar_decodes_cleanly, generate_stream,
                               model_token_logprobs, pair_plan, scored_positions)

FIELDS = ["path", "source", "style", "mood", "valence", "arousal", "kind", "group", "split"]
SAMPLING = {"guidance_w": 1.5, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_tokens_per_bar": 512}


@pytest.fixture(scope="module")
def tiny_manifest(shared_data, tmp_path_factory):
    """A handful of real files (folk, pop piano with human moods, funk drums) copied beside a manifest."""
    rows = list(csv.DictReader((shared_data / "manifest.csv").open()))
    wanted = {("train", "Nottingham"): 12, ("train", "EMOPIA"): 24, ("train", "GrooveMIDI"): 12,
              ("validation", "Nottingham"): 3, ("validation", "EMOPIA"): 4, ("validation", "GrooveMIDI"): 3}
    chosen = []
    for (split, source), n in wanted.items():
        picked = [r for r in rows if r["split"] == split and r["source"] == source
                  and (source != "GrooveMIDI" or r["style"] == "funk")]
        if source == "EMOPIA":  # every quadrant
            by_mood = [[r for r in picked if r["mood"] == m] for m in ("happy", "tense", "sad", "calm")]
            picked = [r for group in zip(*by_mood) for r in group]
        chosen += picked[:n]
    root = tmp_path_factory.mktemp("tiny_manifest")
    for row in chosen:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / row["path"], root / row["path"])
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in chosen)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from model.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    return load_checkpoint(tiny_model_dir)


def _check_report(report: dict, out_dir, n_pairs: int = 12):
    for key in ("nll_per_token", "ngram_nll_per_token"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    for key in RATE_KEYS:
        assert report[key] is not None and 0.0 <= report[key] <= 1.0, key
    assert set(report["music_stat_distance"]) == {"pitch_class_entropy", "polyphony", "notes_per_bar",
                                                  "empty_beat_rate", "groove_consistency", "drum_share"}
    for name, value in report["music_stat_distance"].items():
        assert value is not None and math.isfinite(value) and value >= 0, name
    assert report["elapsed_s"] > 0
    # the grammar guarantees syntax; a random model still writes bars that decode note for note
    assert report["syntax_valid_bar_rate"] == 1.0
    # every genre × mood pair of the training labels (3 × 4 in the tiny manifest) is judged
    assert len(report["details"]["generation"]["pairs"]) == n_pairs
    for name in ("report.json", "report.md", "music_stats.png", "confusion.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert not list(out_dir.glob("*.tmp*"))
    md = (out_dir / "report.md").read_text()
    assert "scored" in md and "Wasserstein" in md


def test_evaluate_end_to_end_on_a_tiny_manifest(tiny_manifest, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tiny_manifest), "--out", str(out),
                 "--bars-per-pair", "2", "--json", "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert printed["nll_per_token"] == report["nll_per_token"]
    _check_report(report, out)
    # a random model is no better than the trigram fitted on the train rows
    assert report["nll_per_token"] > report["ngram_nll_per_token"]
    assert report["pieces"] == 10
    # no classifier beside the model: one was trained on the manifest's train rows, saved with the report
    assert "train rows" in report["details"]["classifier"]["source"]
    assert (out / "classifier" / "model.safetensors").is_file()
    assert not (tiny_model_dir / "classifier").exists()


def test_evaluate_uses_the_classifier_beside_the_model(tiny_manifest, tiny_model_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    code = main(["evaluate", "--train-classifier", "--model", str(model_dir), "--data", str(tiny_manifest),
                 "--classifier-epochs", "5", "--quiet"])
    assert code == 0
    assert (model_dir / "classifier" / "model.json").is_file()
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tiny_manifest), "--out", str(out),
                 "--bars-per-pair", "1", "--guidance", "2", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["details"]["classifier"]["source"] == str(model_dir / "classifier")
    assert report["settings"]["guidance_w"] == 2.0  # a guided decoder (two rows per step)
    _check_report(report, out)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A real dataset built by `moodstream dataset build` from 12 pieces per source."""
    out = tmp_path_factory.mktemp("tiny_dataset") / "dataset"
    assert main(["dataset", "build", "--sources", "emopia,nottingham,groove", "--out", str(out), "--limit", "12",
                 "--workers", "1", "--no-progress"]) == 0
    return out


def test_evaluate_on_a_built_dataset(tiny_dataset, tmp_path, capsys):
    from model.checkpoint import save_checkpoint
    from model.gpt import GPT, GPTConfig
    from model.vocab import Vocab
    from training.dataset import TokenDataset

    vocab = Vocab.load(tiny_dataset / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=512))
    model_dir = save_checkpoint(tmp_path / "model", model, vocab, {"dataset": str(tiny_dataset)})
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tiny_dataset), "--out", str(out),
                 "--bars-per-pair", "1", "--quiet"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    data = TokenDataset(tiny_dataset)
    assert report["data_kind"] == "dataset"
    assert report["pieces"] == len(data.pieces("validation"))
    # no classifier yet: trained on the model's own dataset (train split) and kept beside the model
    assert "trained now on" in report["details"]["classifier"]["source"]
    assert (model_dir / "classifier" / "model.safetensors").is_file()
    train_genres = {r["genre"] for r in data.pieces("train")} - {"any"}
    train_moods = {r["mood"] for r in data.pieces("train")} - {"any"}
    assert set(report["details"]["classifier"]["genres"]) == train_genres
    assert "train split" in report["details"]["ngram_train"]
    _check_report(report, out, n_pairs=len(train_genres) * len(train_moods))


def test_evaluate_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,split\na.mid,validation\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing column" in err[0] and "style" in err[0]
    bad.write_text("path,style,mood,split\nnot/here.mid,folk,,validation\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not/here.mid" in err[0]
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tmp_path / "nothing")]) == 1
    assert "nothing" in capsys.readouterr().err


def test_condition_tokens_are_context_never_scored(vocab, shared_data):
    from model.vocab import Conditions

    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "happy"))
    ids = ids[:50] + vocab.condition_ids(Conditions("pop", "sad")) + ids[50:100]
    positions = scored_positions(vocab, ids)
    assert 0 not in positions and 1 not in positions
    assert not any(vocab.is_condition(ids[p]) for p in positions)
    assert len(positions) == len(ids) - 4


def test_sliding_windows_match_the_full_context_where_it_fits(tiny, vocab, shared_data):
    from model.gpt import GPT, GPTConfig
    from model.vocab import Conditions

    model, _, _ = tiny
    short = GPT(GPTConfig(**{**model.config.to_dict(), "block_size": 128}))
    short.load_state_dict(model.state_dict())
    short.eval()
    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "happy"))[:400]
    full = model_token_logprobs(model, vocab, ids, "cpu")
    slid = model_token_logprobs(short, vocab, ids, "cpu")
    assert full.shape == slid.shape == (399,)
    assert np.allclose(full[:127], slid[:127], atol=1e-4)  # the first window sees the same context
    assert np.all(np.isfinite(slid)) and np.all(slid < 0)
    assert not np.allclose(full[200:], slid[200:])  # later tokens see less context in 128-token windows


def test_generated_stream_switches_at_the_bar_and_decodes(tiny, vocab):
    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions
    from training.musicstats import TokenTable

    model, _, _ = tiny
    decoder = Decoder(model, guidance=True, vocab=vocab)
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    start, target = Conditions("folk", "happy"), Conditions("pop", "happy")

    def run(seed):
        return generate_stream(decoder, grammar, vocab, start, 5, [Switch(2, target)], SAMPLING,
                               torch.Generator().manual_seed(seed), max_tokens_per_bar=120)

    stream = run(3)
    assert len(stream.bars) == 5
    assert stream.conditions == [start, start, target, target, target]
    assert [vocab.conditions_at_bar(stream.ids, b) for b in range(5)] == stream.conditions
    assert all(bar[0] == vocab.bar_id for bar in stream.bars)
    assert all(len(bar) < 120 + 60 for bar in stream.bars)  # closed at the next boundary after the cap
    grammar.check(stream.ids)
    table = TokenTable.from_vocab(vocab)
    assert all(bar_decodes_cleanly(vocab, table, bar) for bar in stream.bars)
    assert run(3).ids == stream.ids  # seeded
    assert run(4).ids != stream.ids


def test_generated_bars_end_at_the_token_limit_per_beat_as_the_streamer_caps_them(tiny, vocab):
    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions
    from streamer.generator import bar_token_limit
    from training.musicstats import TokenTable

    model, _, _ = tiny
    table = TokenTable.from_vocab(vocab)
    decoder = Decoder(model, guidance=False, vocab=vocab)
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    stream = generate_stream(decoder, grammar, vocab, Conditions("funk", "tense"), 10, [], SAMPLING,
                             torch.Generator().manual_seed(1), max_tokens_per_bar=448, max_tokens_per_beat=6.0)
    cut_at = set()
    for bar in stream.bars:
        limit = bar_token_limit(448, 6.0, table.bar_beats(bar[1]))
        assert len(bar) <= limit + 6
        if len(bar) >= limit:
            cut_at.add(limit)
    assert len(cut_at) > 1 and stream.cut_bars >= 2
    grammar.check(stream.ids)


def test_long_streams_reanchor_within_the_context(vocab, tiny):
    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions

    model, _, _ = tiny
    decoder = Decoder(model, guidance=False, vocab=vocab, capacity=160)
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    stream = generate_stream(decoder, grammar, vocab, Conditions("funk", "tense"), 6, [], SAMPLING,
                             torch.Generator().manual_seed(0), max_tokens_per_bar=60)
    assert len(stream.ids) > 160  # it went past the cache capacity
    grammar.check(stream.ids)


def test_reanchor_keeps_the_block_whole_bars_and_the_tempo(vocab, shared_data):
    from model.grammar import Grammar
    from model.vocab import Conditions

    history = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "calm"))[:700]
    kept = _reanchor_ids(vocab, history, keep_tokens=300)
    assert len(kept) <= 300
    assert kept[:2] == vocab.condition_ids(Conditions("folk", "calm"))
    assert kept[2] == vocab.bar_id
    assert vocab.tokens(kept[3:6])[1:] == ["Position_0", vocab.tokens(kept)[5]]
    assert vocab.id_to_token[kept[5]].startswith("Tempo_")  # Bar TimeSig Position_0 Tempo, as in training
    assert kept[-50:] == history[-50:]
    Grammar(vocab).check(kept)


def test_pair_plan_switches_one_axis_to_another_value():
    plan = pair_plan(["pop", "folk", "funk"], ["happy", "sad"], seed=0)
    assert [(g, m) for g, m, _, _ in plan] == [(g, m) for g in ("pop", "folk", "funk") for m in ("happy", "sad")]
    for g, m, axis, (tg, tm) in plan:
        if axis == "genre":
            assert tg != g and tm == m
        else:
            assert tm != m and tg == g
    assert {axis for *_, axis, _ in plan} == {"genre", "mood"}
