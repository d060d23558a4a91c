"""Source adapters on the real shared data: labels, splits, groups, and what the build tokenizes."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from model.vocab import ANY, DEFAULT_GENRES
from training import sources
from training.build import tokenize_piece
from training.sources.base import SourceContext


@pytest.fixture(scope="module")
def ctx(shared_data):
    return SourceContext(data_root=shared_data, seed=0, mma_pieces=18)


@pytest.fixture(scope="module")
def manifest(shared_data):
    with (shared_data / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _count(manifest, source):
    return sum(1 for r in manifest if r["source"] == source)


def test_emopia_keeps_human_quadrants(ctx, manifest):
    specs = sources.load("emopia").specs(ctx)
    assert len(specs) == _count(manifest, "EMOPIA")
    quadrant = {"Q1": "happy", "Q2": "tense", "Q3": "sad", "Q4": "calm"}
    for spec in specs:
        assert spec.mood == quadrant[Path(spec.path).name[:2]] and spec.mood_origin == "human"
        assert spec.genre == "pop" and Path(spec.path).is_file()
    assert {s.split for s in specs} == {"train", "validation"}


def test_vgmidi_human_moods_and_piece_groups(ctx, manifest):
    specs = sources.load("vgmidi").specs(ctx)
    assert len(specs) == _count(manifest, "VGMIDI") == 174
    by_path = {r["path"]: r for r in manifest if r["source"] == "VGMIDI"}
    for spec in specs:
        row = by_path[str(Path(spec.path).relative_to(ctx.data_root))]
        assert spec.mood == row["mood"] and spec.mood_origin == "human" and spec.genre == ANY
        assert spec.split == row["split"]
    # phrases _0/_1 of one piece share a group; groups never span splits
    splits = defaultdict(set)
    for spec in specs:
        splits[spec.group].add(spec.split)
    assert all(len(s) == 1 for s in splits.values())
    assert len(splits) < len(specs)


def test_pop909_mode_from_the_key_file(ctx, shared_data):
    specs = sources.load("pop909").specs(ctx)
    assert len(specs) == 855
    by_song = {Path(s.path).parent.name: s for s in specs}
    key = (shared_data / "pop909" / "001" / "key_audio.txt").read_text().split()[2]  # e.g. Gb:maj
    assert by_song["001"].mode == ("minor" if key.endswith("min") else "major")
    assert Counter(s.mode for s in specs)["minor"] > 100  # POP909 has many minor-key songs
    assert all(s.genre == "pop" and s.mood is None for s in specs)  # mood derived at build time


def test_nottingham_mode_from_abc_and_tune_groups(ctx, manifest):
    specs = sources.load("nottingham").specs(ctx)
    assert len(specs) == _count(manifest, "Nottingham")
    assert all(s.genre == "folk" for s in specs)
    modes = Counter(s.mode for s in specs)
    assert modes["major"] > modes["minor"] > 0
    assert len({s.group for s in specs}) == len(specs)  # one tune per file


def test_groove_styles_to_genres_and_moodless(ctx, shared_data):
    specs = sources.load("groove").specs(ctx)
    assert len(specs) == 1021
    genres = Counter(s.genre for s in specs)
    assert genres["rock"] > 300 and genres["funk"] > 300 and genres["jazz"] > 50 and genres["latin"] > 100
    assert all(s.mood == ANY and s.mood_origin == "none" for s in specs)
    spec = next(s for s in specs if "jazz-funk" in s.path)
    assert spec.genre == "jazz"  # 'jazz/funk': the first style counts


def test_groove_td11_articulations_become_general_midi(ctx, vocab):
    import symusic

    groove = sources.load("groove")
    spec = next(s for s in groove.specs(ctx) if s.piece.endswith("1_funk_80_beat_4-4"))
    raw = symusic.Score(spec.path)
    raw_pitches = {n.pitch for t in raw.tracks for n in t.notes}
    fixed = {n.pitch for t in groove.prepare(symusic.Score(spec.path), spec).tracks for n in t.notes}
    assert raw_pitches & set(groove.TD11_TO_GM)  # this performance uses the kit's extra articulations
    assert not fixed & set(groove.TD11_TO_GM)
    result = tokenize_piece(spec, vocab, ctx.data_root)
    assert result["mood"] == ANY and result["mood_origin"] == "none"


def test_multitrack_titles_give_genres(ctx):
    specs = sources.load("multitrack").specs(ctx)
    assert len(specs) == 12
    by_name = {Path(s.path).name: s.genre for s in specs}
    assert by_name["Funkytown.mid"] == "funk" and by_name["All The Small Things.mid"] == "rock"
    assert by_name["d6caebd1964d9e4a3c5ea59525230e2a.mid"] == ANY


def test_real_files_tokenize_with_labels_and_bars(ctx, vocab):
    for name in ("emopia", "pop909", "nottingham", "multitrack"):
        spec = sources.load(name).specs(ctx)[3]
        result = tokenize_piece(spec, vocab, ctx.data_root)
        assert "skip" not in result, (spec.piece, result)
        ids = result["ids"]
        assert all(int(ids[b]) == vocab.bar_id for b in result["bars"]) and result["bars"][0] == 0
        assert result["mood"] in ("happy", "tense", "sad", "calm")
        if spec.mood is None:
            assert result["mood_origin"] == "derived" and result["evidence"]["mode"] in ("major", "minor")


def test_all_sources_together_keep_groups_in_one_split(shared_data):
    from training.build import BuildConfig, collect_specs

    cfg = BuildConfig(out_dir=Path("unused"), sources=sources.DEFAULT_SOURCES, data_root=shared_data, mma_pieces=45)
    specs = collect_specs(cfg)  # raises if a group spans two splits or an id repeats
    assert len({s.piece for s in specs}) == len(specs)
    splits = defaultdict(set)
    for s in specs:
        splits[s.group].add(s.split)
    assert all(len(v) == 1 for v in splits.values())
    assert {s.genre for s in specs} >= set(DEFAULT_GENRES)
    # arrangements inherit the split of the song or tune they were made from
    song_split = {s.group: s.split for s in specs if s.source in ("pop909", "nottingham")}
    for s in specs:
        if s.source == "mma":
            assert s.split == song_split[s.group]


def test_unreadable_manifest_is_one_clear_error(tmp_path):
    from model.errors import MoodstreamError

    (tmp_path / "manifest.csv").write_bytes(b"path,source\n\xff\xfe,broken\n")
    with pytest.raises(MoodstreamError, match=r"manifest\.csv"):
        sources.load("emopia").specs(SourceContext(data_root=tmp_path))
