"""The genre/mood classifier, trained on a small train split of real files, beats chance on held-out
real files (single bars and 4-bar windows); it saves and loads; its features are key-invariant."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from model.errors import MoodstreamError
from training.classifier import (ClassifierConfig, group_weights, key_profile_features, load_classifier,
                                 tiled_windows, train_classifier, train_classifier_on_pieces, windows_per_length)
from training.pieces import load_manifest_pieces, read_manifest

FIELDS = ["path", "source", "style", "mood", "valence", "arousal", "kind", "group", "split"]


def write_small_manifest(shared_data, out_dir, per_source_train: dict, per_source_val: dict):
    """Copy a few real files (first rows of each source/split) and write a manifest.csv beside them."""
    rows = list(csv.DictReader((shared_data / "manifest.csv").open()))
    chosen = []
    for split, wanted in (("train", per_source_train), ("validation", per_source_val)):
        for (source, style), n in wanted.items():
            picked = [r for r in rows if r["source"] == source and r["split"] == split
                      and (style is None or r["style"] == style)]
            if source == "EMOPIA":  # spread over the four quadrants
                by_mood = {m: [r for r in picked if r["mood"] == m] for m in ("happy", "tense", "sad", "calm")}
                picked = [r for group in zip(*by_mood.values()) for r in group]
            chosen += picked[:n]
    for row in chosen:
        target = out_dir / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / row["path"], target)
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in chosen)
    return manifest


TRAIN = {("Nottingham", None): 30, ("EMOPIA", None): 96, ("GrooveMIDI", "funk"): 30}
VALIDATION = {("Nottingham", None): 12, ("EMOPIA", None): 24, ("GrooveMIDI", "funk"): 15}


@pytest.fixture(scope="module")
def small_manifest(shared_data, tmp_path_factory):
    return write_small_manifest(shared_data, tmp_path_factory.mktemp("small_data"), TRAIN, VALIDATION)


@pytest.fixture(scope="module")
def trained(small_manifest, vocab):
    torch.set_num_threads(1)
    train = load_manifest_pieces(small_manifest, vocab, "train", progress=False)
    val = load_manifest_pieces(small_manifest, vocab, "validation", progress=False)
    clf = train_classifier_on_pieces(vocab, train, (), ClassifierConfig(epochs=15, seed=0), progress=False)
    return clf, val


def _accuracy(clf, pieces, length, max_windows, attr):
    hits = total = 0
    for piece in pieces:
        label = getattr(piece, attr)
        if label == "any":
            continue
        view = clf.prepare(piece.ids)
        for genre, mood in clf.classify(view, tiled_windows(view, length, max_windows)):
            hits += (genre if attr == "genre" else mood) == label
            total += 1
    return hits / total, total


def test_labels_come_from_the_corpus_mapping(trained):
    clf, val = trained
    assert set(clf.genres) == {"folk", "pop", "funk"}
    assert set(clf.moods) == {"happy", "tense", "sad", "calm"}
    emopia = [p for p in val if p.source == "EMOPIA"]
    assert emopia and all(p.mood_origin == "human" for p in emopia)


@pytest.mark.parametrize("length", [1, 4])
def test_genre_beats_chance_on_held_out_files(trained, length):
    clf, val = trained
    acc, n = _accuracy(clf, val, length, 6, "genre")
    assert n >= 100
    assert acc > 0.6, f"genre accuracy {acc:.2f} on {n} windows of {length} bar(s) (chance 1/3)"


def test_mood_beats_chance_on_human_labelled_held_out_files(trained):
    clf, val = trained
    human = [p for p in val if p.mood_origin == "human"]
    acc, n = _accuracy(clf, human, 4, 6, "mood")
    assert n >= 40
    assert acc > 0.35, f"mood accuracy {acc:.2f} on {n} four-bar windows (chance 1/4)"


def test_save_load_round_trip_and_vocabulary_check(trained, vocab, tmp_path):
    from model.vocab import Vocab

    clf, val = trained
    clf.save(tmp_path / "classifier", vocab)
    loaded = load_classifier(tmp_path / "classifier", vocab)
    view = clf.prepare(val[0].ids)
    windows = tiled_windows(view, 2, 5)
    assert loaded.classify(loaded.prepare(val[0].ids), windows) == clf.classify(view, windows)
    other = Vocab.create(genres=("pop", "rock"), moods=("happy", "sad"))
    with pytest.raises(MoodstreamError, match="another vocabulary"):
        load_classifier(tmp_path / "classifier", other)
    with pytest.raises(MoodstreamError, match="no classifier"):
        load_classifier(tmp_path / "nothing", vocab)


def test_train_classifier_writes_a_loadable_directory(small_manifest, vocab, tmp_path):
    torch.set_num_threads(1)
    summary = train_classifier(small_manifest, tmp_path / "clf", ClassifierConfig(epochs=2), vocab=vocab,
                               progress=False)
    assert summary["train_windows"] > 0 and summary["val_windows"] > 0
    assert 0.0 <= summary["val_genre_acc"] <= 1.0
    clf = load_classifier(tmp_path / "clf")
    assert clf.meta["summary"]["data"] == str(small_manifest)


def test_a_prolific_group_weighs_as_much_as_its_cap():
    groups = np.array(["big"] * 60 + ["a"] * 5 + ["b"] * 20)
    w = group_weights(groups, cap=20)
    assert w.mean() == pytest.approx(1.0)
    assert w[groups == "big"].sum() == pytest.approx(w[groups == "b"].sum())  # 60 windows weigh as 20
    assert w[groups == "a"][0] == pytest.approx(w[groups == "b"][0])  # under the cap: every window alike
    assert np.array_equal(group_weights(groups, cap=0), np.ones(groups.size))


def test_long_pieces_give_more_training_windows():
    config = ClassifierConfig(windows_per_length=4, bars_per_window=8, max_windows_per_length=32)
    assert windows_per_length(config, 12) == 4
    assert windows_per_length(config, 120) == 15
    assert windows_per_length(config, 2000) == 32
    with pytest.raises(MoodstreamError, match="max_windows_per_length"):
        ClassifierConfig(windows_per_length=8, max_windows_per_length=4)


def test_key_profile_features_are_transposition_invariant():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pc = rng.random(12) ** 3
        base = key_profile_features(pc)
        for k in (1, 5, 7):
            assert np.allclose(key_profile_features(np.roll(pc, k)), base)
    c_major = np.zeros(12)
    c_major[[0, 4, 7]] = 1.0
    features = key_profile_features(c_major)
    assert features[12] > features[13]  # major correlation above minor for a C major triad
    assert not key_profile_features(np.zeros(12)).any()


def test_manifest_errors_name_the_problem(tmp_path):
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,source\nx.mid,foo\n")
    with pytest.raises(MoodstreamError, match="missing column"):
        read_manifest(bad)
    bad.write_text("path,style,mood,split\nmissing/a.mid,folk,,train\n")
    with pytest.raises(MoodstreamError, match="missing/a.mid"):
        read_manifest(bad)
