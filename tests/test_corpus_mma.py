"""The arrangement generator: real progressions and melodies played by the real `mma`, planned from a seed."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest

from training import labels
from training.sources import mma, pop909
from training.sources.base import SourceContext


# The genres MMA has groove families for (hiphop, classical and game have none: real files back them).
MMA_GENRES = tuple(k for k in labels.mapping()["mma"] if not k.startswith("_"))


@pytest.fixture(scope="module")
def ctx(shared_data):
    return SourceContext(data_root=shared_data, seed=3, mma_pieces=36)


@pytest.fixture(scope="module")
def specs(ctx):
    return mma.specs(ctx)


def test_plan_is_deterministic_and_covers_genres_and_moods(ctx, specs):
    again = mma.specs(ctx)
    assert [s.recipe for s in again] == [s.recipe for s in specs]
    other = mma.specs(dataclasses.replace(ctx, seed=4))
    assert [s.recipe for s in other] != [s.recipe for s in specs]
    recipes = [mma.Recipe.from_json(s.recipe) for s in specs]
    assert Counter(r.genre for r in recipes) == {g: 4 for g in MMA_GENRES}
    assert {(r.genre, r.target_mood) for r in recipes} == {(g, m) for g in MMA_GENRES
                                                           for m in ("happy", "tense", "sad", "calm")}
    for r in recipes:
        assert r.mode == ("major" if r.target_mood in ("happy", "calm") else "minor")
        assert 4 <= r.n_bars <= 32 and len(r.grooves) in (1, 2)
    assert {r.sheet[0] for r in recipes} == {"pop909", "nottingham"}


def test_render_is_a_band_with_the_real_melody_on_top(ctx, specs):
    spec = next(s for s in specs if mma.Recipe.from_json(s.recipe).drums is None)
    recipe = mma.Recipe.from_json(spec.recipe)
    score = mma.render(spec, ctx.data_root)
    pitched = [t for t in score.tracks if not t.is_drum and t.notes]
    assert any(t.is_drum and t.notes for t in score.tracks) or recipe.grooves[0] in ("GypsyJazz", "CubanGuitar")
    assert len(pitched) >= 3  # bass, chords and the melody at least
    melody = next(t for t in score.tracks if t.name == "Melody")
    assert melody.program == recipe.lead_program
    sheet = mma.load_sheet(recipe.sheet, ctx.data_root).window(recipe.start_bar, recipe.n_bars).in_mode(recipe.mode)
    tpq = score.ticks_per_quarter
    assert [(n.time, n.pitch) for n in melody.notes] == [(round(n.start_beats * tpq), n.pitch) for n in sheet.melody]
    bars = recipe.n_bars * sheet.beats_per_bar * tpq
    assert max(n.time for t in pitched for n in t.notes) < bars + tpq  # as long as the window, no longer
    assert score.tempos[0].qpm == pytest.approx(recipe.bpm, abs=0.5)


def test_same_recipe_renders_the_same_notes(ctx, specs):
    a, b = (mma.render(specs[5], ctx.data_root) for _ in range(2))
    notes = lambda s: [(t.program, t.is_drum, [(n.time, n.pitch, n.velocity) for n in t.notes]) for t in s.tracks]
    assert notes(a) == notes(b)


def test_minor_mode_moves_the_real_chords(ctx, shared_data):
    sheet = pop909.song_sheet(str(shared_data / "pop909" / "001"))
    assert sheet.mode == "major"
    minor = sheet.in_mode("minor")
    third = (sheet.tonic + 4) % 12
    major_thirds = sum(n.pitch % 12 == third for n in sheet.melody)
    assert major_thirds > 0 and not any(n.pitch % 12 == third for n in minor.melody)
    tonic_chords = [c for bar in minor.bars for c in bar if c is not None and c.root == sheet.tonic]
    assert tonic_chords and all(c.quality.startswith("min") for c in tonic_chords if c.quality in ("maj", "min"))


def test_groove_performance_replaces_the_generated_drums(ctx, specs):
    spec = next(s for s in specs if mma.Recipe.from_json(s.recipe).sheet[0] == "pop909")
    recipe = mma.Recipe.from_json(spec.recipe)
    perf = "groove/drummer1/session1/1_funk_80_beat_4-4.mid"
    forced = dataclasses.replace(spec, recipe=json.dumps({**json.loads(spec.recipe), "drums": perf, "bpm": 80}))
    score = mma.render(forced, ctx.data_root)
    drums = [t for t in score.tracks if t.is_drum]
    assert len(drums) == 1 and drums[0].name == "Drums"
    import symusic

    source = symusic.Score(str(ctx.data_root / perf))
    tpq_in, tpq = source.ticks_per_quarter, score.ticks_per_quarter
    first_beats = sorted(n.time / tpq_in for t in source.tracks for n in t.notes)[:20]
    got = sorted(n.time / tpq for n in drums[0].notes)[:20]
    assert got == pytest.approx(first_beats, abs=1 / tpq)
    assert max(n.time for n in drums[0].notes) < recipe.n_bars * 4 * tpq


def test_mma_text_has_one_line_per_bar(ctx, specs):
    recipe = mma.Recipe.from_json(specs[0].recipe)
    sheet = mma.load_sheet(recipe.sheet, ctx.data_root).window(recipe.start_bar, recipe.n_bars)
    text = mma.mma_text(sheet, recipe)
    bar_lines = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(bar_lines) == recipe.n_bars
    assert all(len(line.split()) == 1 + sheet.beats_per_bar for line in bar_lines)
    assert f"RndSeed {recipe.seed}" in text and f"Tempo {recipe.bpm}" in text
