"""The MidiCaps + Lakh path on a fixture in exactly MidiCaps' JSON-lines format.

The fixture's MIDI files are real (copied from the shared data into a Lakh-style tree, named by their MD5
like Lakh's); its labels are MADE UP for the test and describe nothing real.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from model.errors import MoodstreamError
from training.build import BuildConfig, build
from training.sources import midicaps
from training.sources.base import SourceContext

# (shared file, made-up genre tags best first, made-up mood/theme tags best first, key, test_set)
FIXTURE = [
    ("multitrack/Funkytown.mid", ["electronic", "pop"], ["film", "happy", "energetic"], "A minor", False),
    ("multitrack/Mr. Blue Sky.mid", ["soundtrack", "rock"], ["melancholic", "sad"], "F major", False),
    ("emopia/Q4_-_FjI4bT2Wo_0.mid", ["orchestral"], ["christmas", "corporate"], "E minor", False),
    ("nottingham/jigs10.mid", ["folk", "celtic"], ["relaxing"], "G major", True),
    ("pop909/002/002.mid", ["pop", "easylistening"], ["emotional", "love"], "D major", False),
]


def _record(location: str, genres, moods, key, test_set) -> dict:
    """One line in MidiCaps' format (fields and types as in the published train.json)."""
    return {
        "location": location,
        "caption": "A made-up caption for a test fixture.",
        "genre": genres, "genre_prob": [round(0.6 / (i + 1), 4) for i in range(len(genres))],
        "mood": moods, "mood_prob": [round(0.5 / (i + 1), 4) for i in range(len(moods))],
        "key": key, "time_signature": "4/4", "tempo": 120, "tempo_word": "Allegro",
        "duration": 120, "duration_word": "Moderate length",
        "chord_summary": ["C", "G", "Am", "F"], "chord_summary_occurence": 8,
        "instrument_summary": ["Piano"], "instrument_numbers_sorted": [0],
        "all_chords": ["C", "G", "Am", "F"], "all_chords_timestamps": [0.0, 2.0, 4.0, 6.0],
        "test_set": test_set,
    }


@pytest.fixture()
def fixture(tmp_path, shared_data):
    lakh = tmp_path / "lakh"
    lines = []
    for rel, genres, moods, key, test_set in FIXTURE:
        data = (shared_data / rel).read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        location = f"lmd_full/{md5[0]}/{md5}.mid"
        (lakh / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / rel, lakh / location)
        lines.append(json.dumps(_record(location, genres, moods, key, test_set)))
    lines.append(json.dumps(_record("lmd_full/0/00000000000000000000000000000000.mid", ["rock"], ["happy"],
                                    "C major", False)))  # listed but not on disk
    labels = tmp_path / "train.json"
    labels.write_text("\n".join(lines) + "\n")
    return labels, lakh


def test_records_map_to_our_labels(fixture):
    labels, lakh = fixture
    specs = midicaps.specs(SourceContext(data_root=lakh, midicaps=labels, lakh_root=lakh))
    assert len(specs) == 6
    by_file = {spec.path: spec for spec in specs}
    got = [(s.genre, s.mood, s.split, s.mode) for s in specs]
    assert got[0] == ("electronic", "happy", "train", "minor")  # film carries no mood: happy is next
    assert got[1] == ("rock", "sad", "train", "major")  # soundtrack carries no genre
    assert got[2] == ("any", None, "train", "minor")  # orchestral, christmas, corporate: nothing of ours
    assert got[3] == ("folk", "calm", "validation", "major")  # test_set → validation
    assert got[4] == ("pop", "sad", "train", "major")
    assert all(s.mood_origin == "derived" and s.group == f"midicaps:{s.path.split('/lakh/')[1]}" for s in specs)
    assert len(by_file) == 6


def test_build_tokenizes_the_fixture_and_counts_the_missing_file(fixture, tmp_path, shared_data):
    labels, lakh = fixture
    out = tmp_path / "out"
    stats = build(BuildConfig(out_dir=out, sources=("midicaps",), data_root=shared_data, midicaps=labels,
                              lakh_root=lakh, workers=1, progress=False))
    assert stats["pieces"] == 5 and stats["skipped"]["by_reason"] == {"file missing": 1}
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "validation"}
    unlabelled = next(r for r in rows if r["genre"] == "any")
    assert unlabelled["mood"] in ("tense", "sad")  # derived from the music with the record's minor key
    assert unlabelled["evidence"]["mode"] == "minor"
    assert stats["by_genre"]["folk"]["pieces"] == 1


def test_unreadable_label_file_is_one_error_naming_it(tmp_path, shared_data):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"location": "lmd_full/1/x.mid", "genre": []}\n{not json\n')
    with pytest.raises(MoodstreamError, match=r"broken\.jsonl: line 2"):
        midicaps.specs(SourceContext(data_root=tmp_path, midicaps=bad, lakh_root=tmp_path))
    with pytest.raises(MoodstreamError, match=r"missing\.jsonl"):
        midicaps.specs(SourceContext(data_root=tmp_path, midicaps=tmp_path / "missing.jsonl", lakh_root=tmp_path))
    no_location = tmp_path / "nolocation.jsonl"
    no_location.write_text('{"caption": "x"}\n')
    with pytest.raises(MoodstreamError, match="location"):
        midicaps.specs(SourceContext(data_root=tmp_path, midicaps=no_location, lakh_root=tmp_path))
