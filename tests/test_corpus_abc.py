"""The ABC reader, chords and lead sheets: hand-written tunes with known timelines, and a real
Nottingham tune against its MIDI rendering."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from training.abc import AbcError, AbcTune, key_tonic_mode, parse_tune, read_tunes
from training.chords import Chord, change_mode_chord, change_mode_pitch, parse_abc_chord, parse_harte


def tune(body: str, meter="4/4", key="C", unit="1/8") -> AbcTune:
    text = f"X: 1\nT:test\nM:{meter}\nL:{unit}\nK:{key}\n{body}\n"
    return AbcTune(1, "test", meter, key, text)


def test_notes_lengths_and_key_signature():
    m = parse_tune(tune('"G"G2 B>c d/2e/2 f z2|"D7"d4 ^f2 f2|', key="G"))
    assert [(n.start, n.length, n.pitch) for n in m.notes[:7]] == [
        (F(0), F(1, 4), 67), (F(1, 4), F(3, 16), 71), (F(7, 16), F(1, 16), 72), (F(1, 2), F(1, 16), 74),
        (F(9, 16), F(1, 16), 76), (F(5, 8), F(1, 8), 78),  # f is F# in G major
        (F(1), F(1, 2), 74)]
    assert m.notes[-2].pitch == 78 and m.notes[-1].pitch == 78  # ^f then f: the accidental holds in the bar
    assert [(s, c.mma_name()) for s, c in m.chords] == [(F(0), "G"), (F(1), "D7")]
    assert (m.tonic, m.mode, m.n_bars) == (7, "major", 2)


def test_accidentals_reset_at_bar_lines_and_naturals():
    m = parse_tune(tune("^c2 c2 =c2 c2|c2 c2 c2 c2|"))
    assert [n.pitch for n in m.notes] == [73, 73, 72, 72, 72, 72, 72, 72]


def test_repeats_first_and_second_endings_and_pickup():
    # pickup G, section A repeated with two endings, then B played once
    m = parse_tune(tune("G|:c4 d4|[1e8:|[2f8||g8|]"))
    pitches = [n.pitch for n in m.notes]
    assert pitches == [72, 74, 76, 72, 74, 77, 79]  # pickup dropped; c d e | c d f | g
    assert m.n_bars == 5


def test_triplets_ties_and_broken_rhythm():
    m = parse_tune(tune("(3cde c2- c2 A>B|c8|"))
    starts = [n.start for n in m.notes]
    assert starts[:3] == [F(0), F(1, 12), F(2, 12)]
    tied = m.notes[3]
    assert tied.pitch == 72 and tied.length == F(1, 2)  # c2-c2 sounds as one note
    assert [n.length for n in m.notes[4:6]] == [F(3, 16), F(1, 16)]


def test_keys_and_modes():
    assert key_tonic_mode("Em")[:2] == (4, "minor")
    assert key_tonic_mode("Ador")[:2] == (9, "minor")
    assert key_tonic_mode("D")[2] == {"F": 1, "C": 1}
    assert key_tonic_mode("Bb")[2] == {"B": -1, "E": -1}
    with pytest.raises(AbcError):
        key_tonic_mode("HP")


def test_meter_change_inside_a_tune_is_refused():
    with pytest.raises(AbcError, match="meter"):
        parse_tune(tune("c4 d4|\nM:3/4\nc2 d2 e2|"))


def test_chord_names():
    assert parse_harte("Gb:min7/b3") == Chord(6, "min7")
    assert parse_harte("A:sus4(b7)") == Chord(9, "7sus4")
    assert parse_harte("N") is None
    assert parse_abc_chord("F#m7") == Chord(6, "min7")
    assert parse_abc_chord("G/B") == Chord(7, "maj")
    assert parse_abc_chord("^text") is None


def test_parallel_mode_moves_degrees_three_six_seven():
    # C major → C minor: I stays, iii→bIII, IV→iv, V→v, vi→bVI
    to_minor = {name: change_mode_chord(parse_abc_chord(name), 0, "minor").mma_name()
                for name in ("C", "Em", "F", "G", "Am")}
    assert to_minor == {"C": "Cm", "Em": "Eb", "F": "Fm", "G": "Gm", "Am": "Ab"}
    # A minor → A major: C → C#m, G → G#dim, F → F#m
    to_major = {name: change_mode_chord(parse_abc_chord(name), 9, "major").mma_name() for name in ("Am", "C", "F")}
    assert to_major == {"Am": "A", "C": "Dbm", "F": "Gbm"}
    assert [change_mode_pitch(p, 0, "minor") for p in (60, 64, 67, 69, 71, 76)] == [60, 63, 67, 68, 70, 75]


def test_real_tune_matches_its_midi_rendering(shared_data):
    """jigs.abc X:254 against nottingham/jigs254.mid: same melody notes at the same beats."""
    import symusic

    tunes = {t.number: t for t in read_tunes(shared_data / "nottingham_abc" / "jigs.abc")}
    melody = parse_tune(tunes[254])
    score = symusic.Score(str(shared_data / "nottingham" / "jigs254.mid"))
    tpq = score.ticks_per_quarter
    track = max(score.tracks, key=lambda t: sum(n.pitch for n in t.notes) / max(len(t.notes), 1))
    midi = sorted((n.time / tpq, n.pitch) for n in track.notes)
    abc = [(float(n.start * 4), n.pitch) for n in melody.notes]
    first = next(i for i in range(len(midi)) if [p for _, p in midi[i:i + 8]] == [p for _, p in abc[:8]])
    offset = midi[first][0] - abc[0][0]
    assert len(abc) > 100
    for (t_abc, p_abc), (t_midi, p_midi) in zip(abc, midi[first:]):
        assert p_abc == p_midi and t_abc == pytest.approx(t_midi - offset, abs=0.02)
