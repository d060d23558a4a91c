"""The REMI grammar: bars sampled under its mask from random logits decode with MidiTok to exactly the
notes their tokens spell (nothing dropped, nothing outside its bar); without the mask they do not.
Also: real encodings are accepted, the mask agrees with `advance`, and the streamer's hooks work."""

from __future__ import annotations

import csv
import random
from collections import Counter
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.grammar import Grammar, GrammarError
from model.sampling import sample
from model.vocab import Conditions


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN_TYPES = ("Bar", "TimeSig", "Position", "Tempo", "Program", "Pitch", "PitchDrum", "Velocity",
               "Duration", "Genre", "Mood")


@pytest.fixture(scope="module")
def grammar(vocab):
    return Grammar(vocab)


# ---- what a bar's tokens spell, computed from MidiTok's documented REMI semantics ----------------
def bar_ticks(numerator: int, denominator: int, tpq: int) -> int:
    return numerator * tpq * 4 // denominator


def spelled_notes(vocab, bar_tokens: list[str], tpq: int) -> Counter:
    """(onset tick, pitch, velocity, duration ticks, program, is_drum) of every note a bar's tokens spell:
    a Position_p sits p / positions_per_beat beats into the bar; a duration 'a.b.c' lasts a + b/c beats."""
    per_beat = vocab.tokenizer.config.max_num_pos_per_beat
    numerator, denominator = 4, 4
    notes, onset_beats, program, i = Counter(), Fraction(0), 0, 0
    for token in bar_tokens:
        if token.startswith("TimeSig_"):
            numerator, denominator = map(int, token.split("_")[1].split("/"))
    ticks_per_beat = tpq * 4 // denominator
    while i < len(bar_tokens):
        kind, _, value = bar_tokens[i].partition("_")
        if kind == "Position":
            onset_beats = Fraction(int(value), per_beat)
        elif kind == "Program":
            program = int(value)
        elif kind in ("Pitch", "PitchDrum"):
            velocity = int(bar_tokens[i + 1].split("_")[1])
            a, b, c = map(int, bar_tokens[i + 2].split("_")[1].split("."))
            duration = (a + Fraction(b, c)) * ticks_per_beat
            notes[(onset_beats * ticks_per_beat, int(value), velocity, duration, max(program, 0), program == -1)] += 1
            i += 2
        i += 1
    return notes


def decoded_notes(score) -> Counter:
    return Counter((n.time, n.pitch, n.velocity, n.duration, t.program, t.is_drum)
                   for t in score.tracks for n in t.notes)


def pitch_token_count(tokens: list[str]) -> int:
    return sum(t.startswith(("Pitch_", "PitchDrum_")) for t in tokens)


def decoding_problems(vocab, ids: list[int]) -> list[str]:
    """What goes wrong when MidiTok decodes `ids`: notes dropped or invented (count of Pitch/PitchDrum
    tokens vs decoded notes, over the stream and per bar) and notes starting outside their bar."""
    problems = []
    score = vocab.decode(ids)
    spelled = pitch_token_count(vocab.tokens(ids))
    decoded = sum(len(t.notes) for t in score.tracks)
    if decoded != spelled:
        problems.append(f"stream: {spelled} pitch tokens but {decoded} notes decoded")
    for index, bar in enumerate(vocab.split_bars(ids)):
        bar_score = vocab.decode(bar)
        tokens = vocab.tokens(bar)
        notes = [n for t in bar_score.tracks for n in t.notes]
        if len(notes) != pitch_token_count(tokens):
            problems.append(f"bar {index}: {pitch_token_count(tokens)} pitch tokens, {len(notes)} notes")
        ts = bar_score.time_signatures[0] if len(bar_score.time_signatures) else None
        length = bar_ticks(ts.numerator, ts.denominator, bar_score.ticks_per_quarter) if ts else 0
        outside = [n.time for n in notes if not 0 <= n.time < length]
        if outside:
            problems.append(f"bar {index}: notes at ticks {outside[:3]} outside the bar (0..{length})")
    return problems


# ---- sampling streams from random logits ---------------------------------------------------------
def class_bias(vocab, weights: dict[str, float]) -> torch.Tensor:
    """(V,) logit offset per token type, so that examples range from sparse to dense bars."""
    bias = torch.zeros(vocab.vocab_size)
    for i, token in enumerate(vocab.id_to_token):
        bias[i] = weights.get(token.split("_")[0], 0.0)
    return bias


def sample_stream(vocab, grammar, seed: int, scale: float, bias: torch.Tensor, n_bars: int,
                  use_mask: bool, max_tokens: int = 4000) -> list[int]:
    """A conditioning block + Bar, then tokens drawn from random logits until `n_bars` bars are done
    (the stream is cut right before the Bar that would open the next one)."""
    gen = torch.Generator().manual_seed(seed)
    ids = vocab.condition_ids(Conditions("jazz", "calm")) + [vocab.bar_id]
    state = grammar.state_after(ids)
    bars = 1
    while len(ids) < max_tokens:
        logits = torch.randn(vocab.vocab_size, generator=gen) * scale + bias
        if use_mask:
            mask = state.allowed()
            assert mask.any(), f"empty mask in {state!r}"
            token = sample(logits, generator=gen, mask=mask)
        else:
            token = sample(logits, generator=gen)
        if token == vocab.bar_id:
            if bars == n_bars:
                return ids
            bars += 1
        if use_mask:
            state = state.advance(token)
        ids.append(token)
    if use_mask:  # ran out of budget: finish the bar at the next point where it may end
        while not state.at_bar_boundary:
            token = sample(torch.randn(vocab.vocab_size, generator=gen) * scale + bias, generator=gen,
                           mask=state.allowed())
            state = state.advance(token)
            ids.append(token)
    return ids


weights_strategy = st.fixed_dictionaries({kind: st.floats(-3.0, 3.0) for kind in TOKEN_TYPES})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), scale=st.floats(0.05, 6.0), weights=weights_strategy,
       n_bars=st.integers(4, 24))
def test_masked_bars_decode_to_exactly_the_notes_their_tokens_spell(vocab, grammar, seed, scale, weights,
                                                                   n_bars):
    ids = sample_stream(vocab, grammar, seed, scale, class_bias(vocab, weights), n_bars, use_mask=True)
    assert decoding_problems(vocab, ids) == []
    bars = vocab.split_bars(ids)
    assert 1 <= len(bars) <= n_bars
    for bar in bars:
        bar_score = vocab.decode(bar)
        assert decoded_notes(bar_score) == spelled_notes(vocab, vocab.tokens(bar), bar_score.ticks_per_quarter)


def test_unmasked_sampling_breaks_the_same_checks(vocab, grammar):
    """The checks above can fail: the same random logits without the mask give broken streams."""
    broken = 0
    for seed in range(10):
        ids = sample_stream(vocab, grammar, seed, 2.0, torch.zeros(vocab.vocab_size), 6, use_mask=False,
                            max_tokens=300)
        broken += bool(decoding_problems(vocab, ids))
        with pytest.raises(GrammarError):
            grammar.check(ids)
    assert broken >= 8


def test_spelled_notes_match_real_miditok_encodings(vocab, shared_data):
    """The test's own reading of REMI agrees with MidiTok on real files (a 6/8 folk tune, drums, pop)."""
    for path in ["nottingham/jigs107.mid", "multitrack/Funkytown.mid"]:
        ids = vocab.encode(shared_data / path)
        for bar in vocab.split_bars(ids)[1:12]:
            score = vocab.decode(bar)
            assert decoded_notes(score) == spelled_notes(vocab, vocab.tokens(bar), score.ticks_per_quarter)


def real_files(shared_data, per_source: int = 4) -> list:
    rows = list(csv.DictReader(open(shared_data / "manifest.csv")))
    by_source: dict[str, list[str]] = {}
    for row in rows:
        if row["source"] != "corrupt" and "corrupt" not in row["path"]:
            by_source.setdefault(row["source"], []).append(row["path"])
    picked = []
    for source, paths in sorted(by_source.items()):
        picked += random.Random(source).sample(paths, min(per_source, len(paths)))
    return [shared_data / p for p in picked]


def test_real_encodings_are_accepted(vocab, grammar, shared_data):
    files = real_files(shared_data)
    assert len(files) >= 20
    for path in files:
        ids = vocab.encode(path)
        state = grammar.check(ids)
        assert state.at_bar_boundary, f"{path} ends inside a bar: {state!r}"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), weights=weights_strategy)
def test_mask_agrees_with_advance_token_by_token(vocab, grammar, seed, weights):
    """Every token the mask allows is accepted by `advance`, and every other token is refused."""
    ids = sample_stream(vocab, grammar, seed, 1.0, class_bias(vocab, weights), 3, use_mask=True, max_tokens=200)
    state, seen = grammar.start(), set()
    for token in ids:
        if state[1:] not in seen:  # each distinct state once: kind, position, bar length, notes here
            seen.add(state[1:])
            mask = state.allowed()
            for candidate in range(vocab.vocab_size):
                try:
                    state.advance(candidate)
                    accepted = True
                except GrammarError:
                    accepted = False
                assert accepted == bool(mask[candidate]), (vocab.id_to_token[candidate], state)
        state = state.advance(token)


def test_no_special_tokens_ever_allowed(vocab, grammar):
    specials = [vocab.token_to_id[t] for t in ("PAD_None", "BOS_None", "EOS_None", "MASK_None")]
    ids = sample_stream(vocab, grammar, 3, 1.0, torch.zeros(vocab.vocab_size), 8, use_mask=True)
    state = grammar.start()
    for token in ids:
        assert not state.allowed()[specials].any()
        state = state.advance(token)


def test_conditioning_block_only_right_before_a_bar(vocab, grammar):
    genre, mood = vocab.genre_ids["rock"], vocab.mood_ids["tense"]
    start = grammar.start()
    assert start.at_bar_boundary and start.allowed().nonzero().flatten().tolist() == [
        i for i, t in enumerate(vocab.id_to_token) if t.startswith("Genre_")]  # the null condition too
    with pytest.raises(GrammarError):
        start.advance(vocab.bar_id)  # a stream opens with its conditioning block
    in_bar = start.advance_all([genre, mood, vocab.bar_id])
    assert in_bar.allowed().nonzero().flatten().tolist() == [i for i, t in enumerate(vocab.id_to_token)
                                                              if t.startswith("TimeSig_")]
    t = vocab.token_to_id
    note = [t["TimeSig_4/4"], t["Position_4"], t["Program_0"], t["Pitch_60"], t["Velocity_63"]]
    mid_note = in_bar.advance_all(note)
    assert not mid_note.at_bar_boundary
    with pytest.raises(GrammarError):
        mid_note.advance(genre)
    done = mid_note.advance(t["Duration_1.0.8"])
    assert done.at_bar_boundary
    assert done.allowed()[genre] and not done.allowed()[mood]
    switched = done.advance_all([genre, mood])  # the streamer's switch: block, then Bar
    assert switched.in_condition_block
    assert switched.allowed().nonzero().flatten().tolist() == [vocab.bar_id]
    switched.advance(vocab.bar_id)


def test_user_controlled_conditions_mask_them_but_accept_a_forced_block(vocab):
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    t = vocab.token_to_id
    state = grammar.start().advance_all([vocab.genre_ids["pop"], vocab.mood_ids["sad"], vocab.bar_id,
                                         t["TimeSig_3/4"], t["Position_0"], t["Program_-1"],
                                         t["PitchDrum_36"], t["Velocity_63"], t["Duration_0.4.8"]])
    condition_ids = list(vocab.genre_ids.values()) + list(vocab.mood_ids.values())
    assert state.at_bar_boundary and not state.allowed()[condition_ids].any()
    state.advance_all([vocab.genre_ids["funk"], vocab.mood_ids["happy"], vocab.bar_id])


def test_positions_move_forward_inside_the_bar_length(vocab, grammar):
    t = vocab.token_to_id
    bar = grammar.start().advance_all([vocab.genre_ids["any"], vocab.mood_ids["any"], vocab.bar_id])
    for signature, positions in (("4/4", 32), ("3/4", 24), ("6/8", 48), ("12/8", 96), ("2/4", 16)):
        state = bar.advance(t[f"TimeSig_{signature}"])
        allowed = [int(vocab.id_to_token[i].split("_")[1]) for i in state.allowed().nonzero().flatten()
                   if vocab.id_to_token[i].startswith("Position_")]
        assert allowed == list(range(positions))
        state = state.advance_all([t["Position_10"], t["Program_5"], t["Pitch_60"], t["Velocity_63"],
                                   t["Duration_1.0.8"]])
        allowed = [int(vocab.id_to_token[i].split("_")[1]) for i in state.allowed().nonzero().flatten()
                   if vocab.id_to_token[i].startswith("Position_")]
        assert allowed == list(range(11, positions))
        with pytest.raises(GrammarError):
            state.advance(t["Position_10"])


def test_notes_per_position_are_capped_so_bars_always_end(vocab):
    grammar = Grammar(vocab, max_notes_per_position=2)
    t = vocab.token_to_id
    note = [t["Program_0"], t["Pitch_60"], t["Velocity_63"], t["Duration_1.0.8"]]
    state = grammar.start().advance_all([vocab.genre_ids["any"], vocab.mood_ids["any"], vocab.bar_id,
                                         t["TimeSig_4/4"], t["Position_0"], *note, *note])
    assert not state.allowed()[t["Program_0"]] and state.allowed()[t["Position_1"]] and state.allowed()[vocab.bar_id]
    with pytest.raises(GrammarError):
        state.advance(t["Program_0"])
    assert state.advance(t["Position_1"]).allowed()[t["Program_0"]]


def test_drum_program_takes_drum_pitches_only(vocab, grammar):
    t = vocab.token_to_id
    state = grammar.start().advance_all([vocab.genre_ids["any"], vocab.mood_ids["any"], vocab.bar_id,
                                         t["TimeSig_4/4"], t["Position_0"]])
    drums, piano = state.advance(t["Program_-1"]), state.advance(t["Program_0"])
    assert drums.allowed()[t["PitchDrum_36"]] and not drums.allowed()[t["Pitch_60"]]
    assert piano.allowed()[t["Pitch_60"]] and not piano.allowed()[t["PitchDrum_36"]]
