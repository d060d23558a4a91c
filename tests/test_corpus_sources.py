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
        assert spec.mood == row["mood"] and spec.mood_origin == "human" and spec.genre == "game"
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
    assert genres["rock"] > 300 and genres["funk"] > 200 and genres["jazz"] > 50 and genres["latin"] > 100
    assert genres["hiphop"] == 86
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


# ---- band, game, classical ---------------------------------------------------------------------------
def test_band_groups_by_artist_in_one_split(ctx, manifest):
    specs = sources.load("band").specs(ctx)
    rows = {r["path"] for r in manifest if r["source"] in ("FreeMIDI-scrape", "KimSSung-jazz")}
    assert len(specs) == len(rows) > 3500
    splits = defaultdict(set)
    for s in specs:
        splits[s.group].add(s.split)
        assert s.mood is None and s.path.endswith(".mid")  # mood derived at build time
    assert all(len(v) == 1 for v in splits.values())
    by_name = {Path(s.path).name: s for s in specs}
    # one artist under several manifest keys and folders: one group (Frank Sinatra in pop and in jazz)
    sinatra = {by_name[n].group for n in ("Frank_Sinatra_Blue_Room.mid", "Frank_Sinatra_All_Of_Me.mid",
                                          "Frank_Sinatra_-_Angel_Eyes.mid")}
    assert sinatra == {"band:frank_sinatra"}
    assert by_name["Oasis_Dont_Go_Away.mid"].group == "band:oasis"
    assert by_name["Elvis_Costello_Almost_Blue.mid"].group == "band:elvis_costello"  # not Elvis Presley
    assert by_name["Elvis_Always_on_my_mind.mid"].group == "band:elvis"
    # one manifest key, several artists (a first name): split by the file name
    assert by_name["David_Gray_Babylon.mid"].group != by_name["David_Cassidy_I_Think_I_Love_You.mid"].group
    moved = [s for s in specs if s.split_from is not None]
    assert 0 < len(moved) < 100 and all(s.split_from != s.split for s in moved)


def test_band_genres_by_folder_and_artist(ctx):
    specs = sources.load("band").specs(ctx)
    by_name = {Path(s.path).name: s for s in specs}
    assert by_name["Marvin_Gaye_634-5789.mid"].genre == "funk" and by_name["Marvin_Gaye_634-5789.mid"].genre_from is None
    soul = [s for s in specs if "/soul/" in s.path and s.genre_from is None]
    assert soul and all(s.genre == "funk" for s in soul)
    relabelled = Counter((s.genre_from, s.genre) for s in specs if s.genre_from is not None)
    assert relabelled[("rock", "any")] >= 4  # Bob Marley: no reggae genre
    assert relabelled[("pop", "latin")] >= 30 and relabelled[("rock", "latin")] == 3  # Shakira ...; Santana
    assert relabelled[("hiphop", "electronic")] >= 15  # DJ BoBo
    assert by_name["Bob_Marley_Survival.mid"].genre == ANY and by_name["Bob_Marley_Survival.mid"].genre_from == "rock"
    assert all(s.genre_from != s.genre for s in specs if s.genre_from is not None)
    assert {s.genre for s in specs} <= set(DEFAULT_GENRES) | {ANY}


def test_game_and_classical_keep_the_manifest_groups(ctx, manifest):
    for name, source, genre in (("game", "VGM-fan", "game"), ("classical", "jsbach", "classical")):
        specs = sources.load(name).specs(ctx)
        rows = {r["path"]: r for r in manifest if r["source"] == source}  # (7 classical paths are listed twice)
        assert len(specs) == len(rows)
        for s in specs:
            row = rows[str(Path(s.path).relative_to(ctx.data_root))]
            assert s.genre == genre and s.split == row["split"] and s.group == f"{name}:{row['group']}"
            assert s.mood is None


def test_band_game_classical_files_tokenize_and_obey_the_grammar(ctx, vocab):
    from model.grammar import Grammar
    from model.vocab import Conditions

    grammar = Grammar(vocab)
    for name in ("band", "game", "classical"):
        spec = sources.load(name).specs(ctx)[5]
        result = tokenize_piece(spec, vocab, ctx.data_root)
        assert "skip" not in result, (spec.piece, result)
        assert result["mood_origin"] == "derived" and result["mood"] in ("happy", "tense", "sad", "calm")
        grammar.start().advance_all(vocab.condition_ids(Conditions()) + result["ids"].tolist())


@pytest.mark.parametrize("name", ["Ludacris_Splash_Waterfalls.mid", "Twista_Overnight_Celebrity.mid"])
def test_unreadable_band_files_are_skipped_with_a_reason(ctx, vocab, name):
    spec = next(s for s in sources.load("band").specs(ctx) if Path(s.path).name == name)
    result = tokenize_piece(spec, vocab, ctx.data_root)
    assert "skip" in result and "unreadable" in result["skip"]


def test_notes_past_the_grammar_cap_are_dropped(vocab):
    from model.grammar import Grammar
    from model.vocab import Conditions
    from training.build import cap_notes_per_position

    t = vocab.token_to_id
    note = [t["Program_0"], t["Pitch_60"], t["Velocity_63"], t["Duration_1.0.8"]]
    bar = [vocab.bar_id, t["TimeSig_4/4"], t["Position_0"]] + note * 5 + [t["Position_8"]] + note * 2
    ids, dropped = cap_notes_per_position(vocab, bar + bar, max_notes=3)
    assert dropped == 4 and len(ids) == 2 * (len(bar) - 2 * len(note))
    grammar = Grammar(vocab, max_notes_per_position=3)
    grammar.start().advance_all(vocab.condition_ids(Conditions()) + ids)  # raises if the cap were exceeded
    assert cap_notes_per_position(vocab, bar) == (bar, 0)


def test_a_small_build_of_the_new_sources_counts_relabels(shared_data, tmp_path):
    import json

    from training.build import BuildConfig, build

    stats = build(BuildConfig(out_dir=tmp_path / "ds", sources=("band", "game", "classical"), data_root=shared_data,
                              workers=1, limit=4, progress=False))
    assert stats["by_source"].keys() == {"band", "game", "classical"}
    assert {"relabelled", "split_moves", "capped"} <= set(stats)
    text = (tmp_path / "ds" / "stats.md").read_text()
    assert "train window share" in text and "| game |" in text
    rows = [json.loads(line) for line in (tmp_path / "ds" / "index.jsonl").read_text().splitlines()]
    assert all(r["mood_origin"] == "derived" for r in rows)
