"""Musical statistics: hand-made bars give the values worked out by hand; the token parser reads the
same notes as MidiTok's decoder on real files; the distribution distance behaves like a distance."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import symusic

from training.musicstats import (FAMILY_NAMES, STAT_NAMES, TokenTable, bar_stats, family_counts, parse_notes,
                                 stat_distances, total_variation, wasserstein_1d)

TPQ = 480


def _score(notes, drums=(), time_sig=(4, 4), tempo_qpm=120.0) -> symusic.Score:
    """notes / drums: (start_beats, duration_beats, pitch) in quarter beats."""
    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, tempo_qpm))
    score.time_signatures.append(symusic.TimeSignature(0, *time_sig))
    for is_drum, items in ((False, notes), (True, drums)):
        if not items:
            continue
        track = symusic.Track(program=0, is_drum=is_drum)
        for start, dur, pitch in items:
            track.notes.append(symusic.Note(int(start * TPQ), int(dur * TPQ), pitch, 90))
        score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def table(vocab):
    return TokenTable.from_vocab(vocab)


def _stats(vocab, table, score):
    ids = vocab.encode(score)
    parsed = parse_notes(table, ids)
    return parsed, bar_stats(parsed)


def test_held_c_major_triad(vocab, table):
    parsed, stats = _stats(vocab, table, _score([(0, 4, 60), (0, 4, 64), (0, 4, 67)]))
    assert parsed.n_bars == 1
    assert stats["polyphony"][0] == pytest.approx(3.0)
    assert stats["pitch_class_entropy"][0] == pytest.approx(math.log(3))
    assert stats["empty_beat_rate"][0] == 0.0
    assert stats["notes_per_bar"][0] == 3
    assert stats["drum_share"][0] == 0.0
    assert math.isnan(stats["groove_consistency"][0])  # no previous bar


def test_half_bar_melody_then_silence(vocab, table):
    # one C for two beats, a G for half a beat on beat 2, then two silent beats (bar closed by a note in bar 2)
    parsed, stats = _stats(vocab, table, _score([(0, 2, 60), (1, 0.5, 67), (4, 1, 62)]))
    assert parsed.n_bars == 2
    assert stats["empty_beat_rate"][0] == pytest.approx(0.5)
    # sounding steps: 4 steps with two notes (beat 1, first half), 12 with one → mean 20 / 16
    assert stats["polyphony"][0] == pytest.approx(20 / 16)
    assert stats["pitch_class_entropy"][0] == pytest.approx(math.log(2))
    assert stats["notes_per_bar"].tolist() == [2, 1]
    assert stats["empty_beat_rate"][1] == pytest.approx(0.75)


def test_note_held_over_the_bar_line_fills_the_next_bar(vocab, table):
    parsed, stats = _stats(vocab, table, _score([(0, 8, 60), (4, 1, 64)]))
    assert parsed.n_bars == 2
    assert stats["notes_per_bar"].tolist() == [1, 1]
    assert stats["empty_beat_rate"].tolist() == [0.0, 0.0]
    assert stats["polyphony"][1] == pytest.approx((8 * 2 + 24 * 1) / 32)  # E over C for one beat


def test_repeated_drum_pattern(vocab, table):
    kicks = [(b, 0.25, 36) for b in range(8)]  # a kick on every beat of two bars
    parsed, stats = _stats(vocab, table, _score([], drums=kicks))
    assert parsed.is_drum.all()
    assert stats["drum_share"].tolist() == [1.0, 1.0]
    assert stats["notes_per_bar"].tolist() == [4, 4]
    assert stats["groove_consistency"][1] == 1.0
    assert np.isnan(stats["pitch_class_entropy"]).all() and np.isnan(stats["polyphony"]).all()
    # the kick lasts a quarter of each beat: no beat is empty
    assert stats["empty_beat_rate"].tolist() == [0.0, 0.0]


def test_groove_consistency_counts_changed_onsets(vocab, table):
    bar1 = [(b, 0.25, 38) for b in range(4)]
    bar2 = [(4 + b, 0.25, 38) for b in range(4)] + [(4.5, 0.25, 42), (5.5, 0.25, 42)]
    _, stats = _stats(vocab, table, _score([], drums=bar1 + bar2))
    assert stats["groove_consistency"][1] == pytest.approx(1 - 2 / 32)  # 2 of 32 grid steps differ


def test_six_eight_bars_count_eighth_beats(vocab, table):
    parsed, stats = _stats(vocab, table, _score([(0, 3, 60)], time_sig=(6, 8)))  # a dotted half = 6 eighths
    assert parsed.beats_per_bar.tolist() == [6]
    assert stats["empty_beat_rate"][0] == 0.0


def test_malformed_note_is_dropped_like_miditok(vocab, table):
    ids = vocab.encode(_score([(0, 1, 60), (1, 1, 62)]))
    tokens = vocab.tokens(ids)
    broken = list(ids)
    del broken[tokens.index("Velocity_91") if "Velocity_91" in tokens else
               next(i for i, t in enumerate(tokens) if t.startswith("Velocity_"))]
    parsed = parse_notes(table, broken)
    decoded = sum(len(t.notes) for t in vocab.decode(broken).tracks)
    assert parsed.note_tokens.sum() == 2
    assert len(parsed.pitch) == decoded == 1


def test_parser_reads_the_notes_miditok_decodes(vocab, table, shared_data):
    rows = list(csv.DictReader((shared_data / "manifest.csv").open()))
    picks = [next(r for r in rows if r["source"] == s) for s in ("Nottingham", "GrooveMIDI", "EMOPIA", "MidiTok-tests")]
    picks.append(next(r for r in rows if r["path"].startswith("nottingham/jigs")))  # 6/8
    for row in picks:
        ids = vocab.encode(shared_data / row["path"])
        parsed = parse_notes(table, ids)
        score = vocab.decode(ids)
        tpq = score.ticks_per_quarter
        mine = sorted(
            (round(parsed.onset_beats[i] * 4 / parsed.time_sig[parsed.bar[i]][1] * tpq), int(parsed.pitch[i]),
             round(parsed.duration_beats[i] * 4 / parsed.time_sig[parsed.bar[i]][1] * tpq), int(parsed.program[i]))
            for i in range(len(parsed.pitch)))
        theirs = sorted((n.time, n.pitch, n.duration, -1 if t.is_drum else t.program)
                        for t in score.tracks for n in t.notes)
        assert len(mine) > 0, row["path"]
        assert mine == theirs, row["path"]
        stats = bar_stats(parsed)
        assert set(stats) == set(STAT_NAMES)
        assert all(len(v) == parsed.n_bars for v in stats.values())


def test_wasserstein_1d_known_values():
    assert wasserstein_1d([0.0], [1.0]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    assert wasserstein_1d(x, x + 2.5) == pytest.approx(2.5)
    assert wasserstein_1d(x, x) == 0.0
    y = rng.normal(size=300) * 2
    assert wasserstein_1d(x, y) == pytest.approx(wasserstein_1d(y, x))
    assert wasserstein_1d([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        wasserstein_1d([], [1.0])


def test_stat_distances_are_normalised_by_the_real_spread():
    rng = np.random.default_rng(1)
    real = {name: rng.normal(10, 3, size=2000) for name in STAT_NAMES}
    same = stat_distances(real, real)
    assert all(entry["distance"] == 0.0 for entry in same.values())
    shifted = stat_distances(real, {name: v + 3.0 for name, v in real.items()})
    assert all(entry["distance"] == pytest.approx(3.0 / real[name].std()) for name, entry in shifted.items())
    missing = stat_distances(real, {name: np.zeros(0) for name in STAT_NAMES})
    assert all(entry["distance"] is None and entry["generated_bars"] == 0 for entry in missing.values())


def test_instrument_families_count_notes_per_family_and_per_bar(vocab):
    score = _score([(0, 1, 60), (1, 1, 62), (4, 1, 64)], drums=[(0, 0.5, 36), (4, 0.5, 38)])
    score.tracks[0].program = 33  # electric bass (finger): the bass family
    parsed = parse_notes(TokenTable.from_vocab(vocab), vocab.encode(score))
    counts = family_counts(parsed)
    assert counts.sum() == 5 and counts[FAMILY_NAMES.index("bass")] == 3 and counts[FAMILY_NAMES.index("drums")] == 2
    second_bar = family_counts(parsed, slice(1, 2))
    assert second_bar[FAMILY_NAMES.index("bass")] == 1 and second_bar[FAMILY_NAMES.index("drums")] == 1
    piano = np.eye(len(FAMILY_NAMES))[0] * 7
    assert total_variation(counts, counts * 3) == 0.0
    assert total_variation(counts, piano) == 1.0
    assert total_variation(counts, np.zeros(len(FAMILY_NAMES))) is None
