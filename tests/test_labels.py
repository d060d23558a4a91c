"""The label mapping table (training/labels.json) and the derived-mood rules on hand-made cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model.vocab import ANY, DEFAULT_GENRES, DEFAULT_MOODS
from training import labels
from training.labels import Evidence, derive_mood, estimate_mode, mode_from_key_name, notes_evidence, score_evidence

# The 56 MTG-Jamendo mood/theme tags (autotagging_moodtheme, as in MidiCaps' `mood` lists).
MTG_MOOD_TAGS = """action adventure advertising background ballad calm children christmas commercial cool corporate
dark deep documentary drama dramatic dream emotional energetic epic fast film fun funny game groovy happy heavy
holiday hopeful inspiring love meditative melancholic melodic motivational movie nature party positive powerful
relaxing retro romantic sad sexy slow soft soundscape space sport summer trailer travel upbeat uplifting""".split()
# MidiCaps genre tags named in the issue, a subset of the 95 MTG-Jamendo genre tags.
ISSUE_GENRE_TAGS = ("rock pop electronic classical jazz ambient soundtrack alternative metal country blues folk funk "
                    "latin reggae hiphop techno").split()


def test_taxonomy_is_the_vocabulary_default():
    assert labels.genres() == DEFAULT_GENRES
    assert labels.moods() == DEFAULT_MOODS == ("happy", "tense", "sad", "calm")
    assert len(labels.genres()) >= 8


@pytest.mark.parametrize("name", ["manifest_style", "groove_style", "multitrack", "band_style", "artist",
                                  "midicaps_genre"])
def test_genre_tables_map_to_our_genres(name):
    targets = set(labels.table(name).values())
    assert targets <= set(DEFAULT_GENRES) | {ANY}, targets - set(DEFAULT_GENRES)


def test_mood_tables_map_to_our_moods():
    assert set(labels.table("midicaps_mood").values()) <= set(DEFAULT_MOODS) | {labels.NO_MOOD}
    assert set(labels.table("quadrants").values()) == set(DEFAULT_MOODS)


def test_every_midicaps_mood_tag_is_mapped_and_themes_carry_no_mood():
    table = labels.table("midicaps_mood")
    assert sorted(table) == sorted(MTG_MOOD_TAGS) and len(table) == 56
    for theme in ("film", "christmas", "corporate", "advertising", "documentary", "trailer"):
        assert labels.mood_for("midicaps_mood", theme) is None
    assert labels.mood_for("midicaps_mood", "happy") == "happy"
    assert labels.mood_for("midicaps_mood", "melancholic") == "sad"
    assert labels.mood_for("midicaps_mood", "relaxing") == "calm"
    assert labels.mood_for("midicaps_mood", "dark") == "tense"


def test_midicaps_genre_tags_named_in_the_issue_are_mapped():
    table = labels.table("midicaps_genre")
    assert len(table) == 95
    assert set(ISSUE_GENRE_TAGS) <= set(table)
    assert labels.genre_for("midicaps_genre", "techno") == "electronic"
    assert labels.genre_for("midicaps_genre", "hardrock") == "rock"
    assert labels.genre_for("midicaps_genre", "classical") == "classical"
    assert labels.genre_for("midicaps_genre", "rap") == "hiphop"


def test_first_mapped_label_wins_in_probability_order():
    assert labels.first_mapped("midicaps_mood", ["film", "christmas", "sad", "happy"], labels.NO_MOOD) == "sad"
    assert labels.first_mapped("midicaps_mood", ["film", "corporate"], labels.NO_MOOD) is None
    assert labels.first_mapped("midicaps_genre", ["soundtrack", "jazz"], ANY) == "jazz"


def test_groove_styles_cover_every_style_in_the_shared_data(shared_data):
    import csv

    with (shared_data / "groove" / "info.csv").open(newline="") as f:
        styles = {row["style"].split("/")[0] for row in csv.DictReader(f)}
    assert styles <= set(labels.table("groove_style"))


def test_taxonomy_has_the_new_genres():
    assert labels.genres() == ("pop", "rock", "jazz", "latin", "blues", "country", "folk", "funk", "hiphop",
                               "electronic", "classical", "game")
    assert labels.genre_for("groove_style", "hiphop") == "hiphop"
    assert labels.genre_for("band_style", "soul") == "funk"
    assert labels.genre_for("manifest_style", "videogame") == labels.genre_for("manifest_style",
                                                                             "videogame_piano") == "game"


def test_band_styles_cover_the_shared_data_and_every_artist_key_exists(shared_data):
    from training.sources import band
    from training.sources.base import read_manifest

    rows = [r for r in read_manifest(shared_data) if r.source in band.MANIFEST_SOURCES]
    assert {r.style for r in rows} <= set(labels.table("band_style"))
    keys = set(band.artist_keys(rows).values())
    assert set(labels.table("artist")) <= keys, set(labels.table("artist")) - keys  # no misspelt artist


def test_quadrants():
    assert labels.quadrant_mood(1, 1) == "happy"
    assert labels.quadrant_mood(-1, 1) == "tense"
    assert labels.quadrant_mood(-1, -1) == "sad"
    assert labels.quadrant_mood(1, -1) == "calm"


def test_mma_grooves_exist_in_the_installed_library():
    lib = Path("/usr/share/mma/lib")
    if not lib.is_dir():
        pytest.fail("mma's groove library is missing: run `make setup` (Debian package mma)")
    defined = set()
    for path in lib.rglob("*.mma"):
        defined |= {m.lower() for m in re.findall(r"^\s*DefGroove\s+(\S+)", path.read_text(errors="replace"), re.M | re.I)}
    families = {k: v for k, v in labels.mapping()["mma"].items() if not k.startswith("_")}
    assert set(families) == set(DEFAULT_GENRES) - {"hiphop", "classical", "game"}  # these have real files only
    for genre, fam in families.items():
        for meter in ("4/4", "3/4", "12/8"):
            for entry in fam.get(meter, []):
                assert entry.split("@")[0].lower() in defined, f"{genre}: groove {entry} not in mma's library"


# ---- derived moods --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,bpm,density,mood", [
    ("major", 140, 6.0, "happy"),  # fast and busy, major
    ("minor", 150, 7.0, "tense"),  # fast and busy, minor
    ("minor", 60, 1.5, "sad"),  # slow and sparse, minor
    ("major", 66, 2.0, "calm"),  # slow and sparse, major
    ("major", 100, 4.0, "happy"),  # exactly at the reference: counts as high arousal
    ("major", 200, 1.0, "calm"),  # very fast tempo but one note every second: log2(2) + log2(1/4) < 0
    ("minor", 50, 9.0, "tense"),  # slow tempo but very dense: log2(0.5) + log2(9/4) > 0
])
def test_derive_mood_rules(mode, bpm, density, mood):
    assert derive_mood(Evidence(mode, bpm, density)) == mood


def test_evidence_rejects_nonsense():
    with pytest.raises(ValueError, match="mode"):
        Evidence("dorian", 120, 3)
    with pytest.raises(ValueError, match="bpm"):
        Evidence("major", 0, 3)


@pytest.mark.parametrize("key,mode", [("A minor", "minor"), ("Gb:maj", "major"), ("min", "minor"), ("Em", "minor"),
                                      ("Ador", "minor"), ("Gmix", "major"), ("Bb", "major"), ("F#m", "minor"),
                                      ("C major", "major"), ("", None)])
def test_mode_from_key_name(key, mode):
    assert mode_from_key_name(key) == mode


def test_estimate_mode_from_pitch_classes():
    c_major = [0] * 12
    for pc, w in ((0, 4), (2, 1), (4, 3), (5, 1), (7, 3), (9, 1), (11, 1)):
        c_major[pc] = w
    a_minor = [0] * 12
    for pc, w in ((9, 4), (11, 1), (0, 3), (2, 1), (4, 3), (5, 1), (7, 1)):
        a_minor[pc] = w
    assert estimate_mode(c_major) == "major"
    assert estimate_mode(a_minor) == "minor"


def _scale_score(pitches, bpm, note_beats, drums=False):
    import symusic

    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, bpm))
    track = symusic.Track(name="t", program=0, is_drum=drums)
    for i, pitch in enumerate(pitches * 4):
        track.notes.append(symusic.Note(int(i * note_beats * 480), int(note_beats * 480), pitch, 90))
    score.tracks.append(track)
    return score


def test_score_evidence_on_hand_made_scores():
    c_major_run = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]
    a_minor_run = [57, 59, 60, 62, 64, 65, 67, 69, 64, 60, 57]
    fast = score_evidence(_scale_score(c_major_run, 150, 0.5))  # eighths at 150 bpm: 5 onsets/s
    slow = score_evidence(_scale_score(a_minor_run, 60, 1.0))  # quarters at 60 bpm: 1 onset/s
    assert fast.mode == "major" and fast.bpm == pytest.approx(150) and fast.onsets_per_s == pytest.approx(5, rel=0.05)
    assert derive_mood(fast) == "happy"
    assert slow.mode == "minor" and derive_mood(slow) == "sad"
    assert score_evidence(_scale_score(c_major_run, 60, 1.0), mode="minor").mode == "minor"  # a label wins
    assert score_evidence(_scale_score([36, 38, 42], 120, 0.5, drums=True)) is None  # drums only: no valence


@pytest.mark.parametrize("pitches, bpm, note_beats, mood", [
    ([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], 150, 0.5, "happy"),
    ([57, 59, 60, 62, 64, 65, 67, 69, 64, 60, 57], 60, 1.0, "sad"),
    ([57, 59, 60, 62, 64, 65, 67, 69, 64, 60, 57], 160, 0.5, "tense"),
    ([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], 70, 1.0, "calm"),
])
def test_notes_evidence_measures_tokens_as_score_evidence_measures_the_file(vocab, pitches, bpm, note_beats, mood):
    from model.remi import RemiTable
    from training.musicstats import parse_notes

    score = _scale_score(pitches, bpm, note_beats)
    from_file = score_evidence(score)
    from_tokens = notes_evidence(parse_notes(RemiTable(vocab), vocab.encode(score)))
    assert from_tokens.mode == from_file.mode
    assert from_tokens.bpm == pytest.approx(from_file.bpm, rel=0.05)  # Tempo tokens are quantised
    assert from_tokens.onsets_per_s == pytest.approx(from_file.onsets_per_s, rel=0.05)
    assert derive_mood(from_tokens) == derive_mood(from_file) == mood


def test_notes_evidence_needs_enough_pitched_onsets(vocab):
    from model.remi import RemiTable
    from training.musicstats import parse_notes

    table = RemiTable(vocab)
    few = _scale_score([60, 64], 120, 1.0)  # 8 notes, 8 onsets: judged; a drum groove: not
    assert notes_evidence(parse_notes(table, vocab.encode(few))) is not None
    assert notes_evidence(parse_notes(table, vocab.encode(few)), min_onsets=9) is None
    drums = _scale_score([36, 38, 42], 120, 0.5, drums=True)
    assert notes_evidence(parse_notes(table, vocab.encode(drums))) is None
