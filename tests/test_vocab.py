"""The REMI + condition vocabulary on real MIDI files."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import symusic

from model.errors import MoodstreamError
from model.vocab import Conditions, Vocab, load_score, read_condition_names

REAL_FILES = [
    "multitrack/Funkytown.mid",
    "multitrack/Mr. Blue Sky.mid",
    "groove/drummer1/session1/102_funk_95_beat_4-4.mid",
    "pop909/001/001.mid",
    "nottingham/ashover1.mid",
]


def _existing(shared_data, rel):
    path = shared_data / rel
    assert path.is_file(), f"fixture file missing: {path}"
    return path


def _onsets(score: symusic.Score):
    """(onset in quarter notes, pitch, is_drum) of every note."""
    tpq = score.ticks_per_quarter
    return sorted((Fraction(n.time, tpq), n.pitch, t.is_drum) for t in score.tracks for n in t.notes)


@pytest.mark.parametrize("rel", REAL_FILES)
def test_round_trip_keeps_notes_and_onsets(shared_data, vocab, rel):
    path = _existing(shared_data, rel)
    score = load_score(path)
    ids = vocab.encode(score, Conditions("pop", "happy"))
    decoded = vocab.decode(ids)
    # quantisation to the tokenizer's grid is MidiTok's preprocessing; compare after it, in beats
    expected = _onsets(vocab.tokenizer.preprocess_score(score.copy()))
    got = _onsets(decoded)
    assert len(got) == len(expected) > 0
    assert got == expected


def test_repeated_positions_are_merged_and_a_tempo_after_one_moves_up(vocab):
    ids = [vocab.token_to_id[t] for t in (
        "Bar_None", "TimeSig_4/4", "Position_4", "Program_-1", "PitchDrum_36", "Velocity_63", "Duration_0.1.8",
        "Position_4", "Program_0", "Pitch_60", "Velocity_63", "Duration_1.0.8",  # a repeat: merged
        "Position_8", "Tempo_121.29", "Program_0", "Pitch_62", "Velocity_63", "Duration_1.0.8",
        "Position_8", "Tempo_87.42", "Program_0", "Pitch_64", "Velocity_63", "Duration_1.0.8",  # later tempo wins
        "Bar_None", "TimeSig_4/4", "Position_4", "Program_0", "Pitch_65", "Velocity_63", "Duration_1.0.8")]
    merged = vocab.tokens(vocab.merge_repeated_positions(ids))
    assert merged == [
        "Bar_None", "TimeSig_4/4", "Position_4", "Program_-1", "PitchDrum_36", "Velocity_63", "Duration_0.1.8",
        "Program_0", "Pitch_60", "Velocity_63", "Duration_1.0.8",
        "Position_8", "Tempo_87.42", "Program_0", "Pitch_62", "Velocity_63", "Duration_1.0.8",
        "Program_0", "Pitch_64", "Velocity_63", "Duration_1.0.8",
        "Bar_None", "TimeSig_4/4", "Position_4", "Program_0", "Pitch_65", "Velocity_63", "Duration_1.0.8"]
    assert _onsets(vocab.decode(ids)) == _onsets(vocab.decode(vocab.merge_repeated_positions(ids)))
    assert vocab.decode(vocab.merge_repeated_positions(ids)).tempos[-1].qpm == vocab.decode(ids).tempos[-1].qpm


def test_a_real_file_with_repeated_positions_encodes_to_the_same_notes(vocab, shared_data):
    """MidiTok repeats `Position_28` in this band file; the merged encoding spells the same notes and tempos."""
    path = _existing(shared_data, "band/jazz/Accoustic_Alchemy_-_Playing_For_Time.mid")
    raw = list(vocab.tokenizer.encode(load_score(path)).ids)
    merged = vocab.encode(path)[2:]
    assert len(merged) < len(raw)
    raw_score, merged_score = vocab.decode(raw), vocab.decode(merged)
    assert _onsets(merged_score) == _onsets(raw_score) and merged_score.note_num() > 10_000
    assert [(t.time, t.qpm) for t in merged_score.tempos] == [(t.time, t.qpm) for t in raw_score.tempos]


def test_drums_stay_on_the_drum_channel(shared_data, vocab):
    path = _existing(shared_data, REAL_FILES[2])
    decoded = vocab.decode(vocab.encode(path))
    assert decoded.tracks and all(t.is_drum for t in decoded.tracks)
    assert decoded.note_num() > 0


def test_conditioning_block_opens_the_sequence(vocab, shared_data):
    ids = vocab.encode(_existing(shared_data, REAL_FILES[0]), Conditions("funk", "tense"))
    assert vocab.tokens(ids[:3]) == ["Genre_funk", "Mood_tense", "Bar_None"]
    assert vocab.encode(_existing(shared_data, REAL_FILES[0]))[:2] == vocab.condition_ids(Conditions())


def test_mid_stream_block_changes_conditions_from_its_bar(vocab, shared_data):
    ids = vocab.encode(_existing(shared_data, REAL_FILES[0]), Conditions("funk", "happy"))
    bars = vocab.split_bars(ids)
    assert len(bars) > 6
    assert sum(map(len, bars)) == len(ids)
    assert all(bar.count(vocab.bar_id) == 1 for bar in bars)
    # splice a new block before bar 4
    new_block = vocab.condition_ids(Conditions("jazz", "sad"))
    spliced = [t for bar in bars[:4] for t in bar] + new_block + [t for bar in bars[4:] for t in bar]
    assert vocab.conditions_at_bar(spliced, 0) == Conditions("funk", "happy")
    assert vocab.conditions_at_bar(spliced, 3) == Conditions("funk", "happy")
    assert vocab.conditions_at_bar(spliced, 4) == Conditions("jazz", "sad")
    assert vocab.conditions_at_bar(spliced, len(bars) - 1) == Conditions("jazz", "sad")
    assert vocab.split_bars(spliced)[4][:2] == new_block
    with pytest.raises(IndexError):
        vocab.conditions_at_bar(spliced, len(bars))
    # the decoded music ignores condition tokens
    assert vocab.decode(spliced).note_num() == vocab.decode(ids).note_num()


def test_last_tempo_is_carried(vocab, shared_data):
    ids = vocab.encode(_existing(shared_data, REAL_FILES[0]))
    bars = vocab.split_bars(ids)
    assert vocab.last_tempo(bars[0]) is not None
    assert vocab.last_tempo(ids) == pytest.approx(vocab.last_tempo([t for b in bars for t in b]))


def test_vocab_saves_and_loads_with_its_condition_lists(tmp_path):
    vocab = Vocab.create(genres=["rock", "jazz"], moods=["calm"])
    path = tmp_path / "tokenizer.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.fingerprint() == vocab.fingerprint()
    assert loaded.genres == ("any", "rock", "jazz")
    assert loaded.moods == ("any", "calm")
    assert read_condition_names(path) == (("any", "rock", "jazz"), ("any", "calm"))
    assert loaded.has_null and loaded.tokens([loaded.null_genre_id, loaded.null_mood_id]) == ["Genre_null", "Mood_null"]


def test_null_is_the_dropout_token_not_a_label(vocab):
    block = vocab.condition_ids(Conditions("rock", "sad"))
    assert vocab.null_ids(block + [vocab.bar_id]) == [vocab.null_genre_id, vocab.null_mood_id, vocab.bar_id]
    assert vocab.null_genre_id != vocab.genre_ids["any"] and vocab.is_condition(vocab.null_mood_id)
    with pytest.raises(MoodstreamError, match=r"unknown genre 'null'"):
        vocab.check(Conditions("null", "sad"))
    with pytest.raises(MoodstreamError, match=r"'null' is the condition-dropout token"):
        Vocab.create(genres=["rock", "null"])


def test_the_contrast_reading_gives_the_opposite_mood_and_no_genre(vocab):
    pairs = {"happy": "sad", "sad": "happy", "tense": "calm", "calm": "tense", "any": None}
    for mood, opposite in pairs.items():
        block = vocab.condition_ids(Conditions("jazz", mood)) + [vocab.bar_id]
        want = vocab.null_mood_id if opposite is None else vocab.mood_ids[opposite]
        assert vocab.contrast_ids(iter(block)) == [vocab.null_genre_id, want, vocab.bar_id]
    only_two = Vocab.create(genres=("rock",), moods=("happy", "tense"))  # no opposites: the null reading
    block = only_two.condition_ids(Conditions("rock", "happy"))
    assert only_two.contrast_ids(block) == only_two.null_ids(block)


def test_a_vocabulary_without_null_reads_any_as_no_condition(tmp_path):
    Vocab.create(null=False).save(tmp_path / "tokenizer.json")  # as written before the null token existed
    old = Vocab.load(tmp_path / "tokenizer.json")
    assert not old.has_null and "Genre_null" not in old.token_to_id
    assert (old.null_genre_id, old.null_mood_id) == (old.genre_ids["any"], old.mood_ids["any"])


def test_unknown_genre_lists_the_valid_ones(vocab):
    with pytest.raises(MoodstreamError, match=r"unknown genre 'polka'; valid genres: any, pop, rock"):
        vocab.condition_ids(Conditions("polka", "happy"))
    with pytest.raises(MoodstreamError, match=r"unknown mood 'angry'; valid moods: any, happy"):
        vocab.check(Conditions("pop", "angry"))


def test_corrupt_file_is_one_error_naming_it(shared_data, vocab):
    corrupt = next((shared_data / "corrupt").glob("*.mid"))
    with pytest.raises(MoodstreamError) as info:
        vocab.encode(corrupt)
    message = str(info.value)
    assert corrupt.name in message and "\n" not in message


def test_bad_vocab_files(tmp_path):
    with pytest.raises(MoodstreamError, match="not found"):
        Vocab.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MoodstreamError, match="bad.json: not a readable tokenizer JSON"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"config": {"additional_params": {}}}))
    with pytest.raises(MoodstreamError, match="no moodstream genre/mood lists"):
        Vocab.load(bad)
