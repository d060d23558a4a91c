"""Generated band arrangements: real chord progressions and melodies played by Debian's MMA in our genres.

`specs(ctx)` plans `ctx.mma_pieces` pieces, deterministic from `ctx.seed`: genres in turn, and for each
genre the four moods in turn as targets; for each a lead sheet (a POP909 song or a Nottingham tune whose
meter the genre has grooves for), a window of 16–32 bars, one or two grooves of the genre (labels.json
`mma`; slow ones for low arousal), a tempo from the low or high part of the groove's range, the mode of
the target's valence (the sheet moves to the parallel mode), a lead instrument for the real melody and,
sometimes, a real Groove drum performance of the genre (same split, 4/4; the piece takes its tempo). The
mood label is still derived from the finished music, like every source without human labels.
`render(spec, data_root)` runs `mma` and returns the symusic Score. Pieces inherit the group and split
of the song or tune they come from.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from model.errors import MoodstreamError
from training import labels
from training.labels import mapping
from training.leadsheet import BEATS_PER_BAR, LeadSheet, SheetError
from training.sources import groove, nottingham, pop909
from training.sources.base import PieceSpec, SourceContext, read_manifest

log = logging.getLogger(__name__)

NAME = "mma"
MMA_BIN = "mma"
MMA_TIMEOUT_S = 60


@dataclass(frozen=True)
class Recipe:
    sheet: tuple  # ("pop909", "001") | ("nottingham", "jigs", 242)
    genre: str
    grooves: tuple[str, ...]  # one or two MMA grooves (the second from the middle bar on)
    bpm: int
    mode: str  # major | minor
    start_bar: int
    n_bars: int
    lead_program: int  # GM program of the melody
    drums: str | None  # Groove performance (relative to the data root) replacing MMA's drums
    seed: int  # MMA's RndSeed
    target_mood: str  # the quadrant the plan aimed at (the label is still derived from the music)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        data = json.loads(text)
        data["sheet"] = tuple(data["sheet"])
        data["grooves"] = tuple(data["grooves"])
        return cls(**data)


@dataclass(frozen=True)
class _Outline:
    sheet: tuple
    meter: str
    n_bars: int
    first_bar: int  # first bar with chords
    last_bar: int  # last bar with chords (inclusive)
    split: str
    group: str


def families() -> dict[str, dict]:
    return {k: v for k, v in mapping()["mma"].items() if not k.startswith("_")}


def options() -> dict:
    return mapping()["mma_options"]


def groove_range(entry: str, family: dict) -> tuple[str, int, int]:
    """('TripHop', 70, 100) from 'TripHop@70-100'; the family's range when the groove names none."""
    name, _, rng = entry.partition("@")
    lo, hi = (int(x) for x in rng.split("-")) if rng else family["bpm"]
    return name, lo, hi


def check_mma() -> None:
    if shutil.which(MMA_BIN) is None:
        raise MoodstreamError("`mma` not found: install it with `make setup` (Debian package mma), "
                              "or leave `mma` out of --sources")


def _outlines(ctx: SourceContext) -> list[_Outline]:
    out = []
    for row in read_manifest(ctx.data_root, pop909.MANIFEST_SOURCE):
        song = (ctx.data_root / row.path).parent
        try:
            bars, _, _ = pop909.song_chords(song)
        except SheetError as err:
            log.debug("mma plan: %s", err)
            continue
        chorded = [i for i, bar in enumerate(bars) if any(c is not None for c in bar)]
        if len(chorded) >= 8:
            out.append(_Outline(("pop909", song.name), "4/4", len(bars), chorded[0], chorded[-1], row.split,
                                f"pop909:{row.group}"))
    for row in read_manifest(ctx.data_root, nottingham.MANIFEST_SOURCE):
        name, number = nottingham.file_tune(row.path)
        try:
            sheet = nottingham.tune_sheet(str(ctx.data_root / nottingham.ABC_DIR / f"{name}.abc"), number)
        except SheetError as err:
            log.debug("mma plan: %s", err)
            continue
        chorded = sheet.chorded_bars()
        if len(chorded) >= 4:
            out.append(_Outline(("nottingham", name, number), sheet.meter, sheet.n_bars, chorded[0], chorded[-1],
                                row.split, f"nottingham:{Path(row.path).stem}"))
    return out


def plan(ctx: SourceContext) -> list[tuple[Recipe, _Outline]]:
    """The recipes for ctx.mma_pieces pieces (same seed → same list)."""
    rng = random.Random(f"mma-{ctx.seed}")
    outlines = _outlines(ctx)
    fams = families()
    opts = options()
    drums_by = {}
    for perf in groove.performances(ctx):
        if perf.kind == "beat" and perf.meter == "4-4" and perf.duration_s >= opts["groove_drums_min_s"]:
            drums_by.setdefault((perf.genre, perf.split), []).append(perf)
    by_meter: dict[tuple[str, str], list[_Outline]] = {}
    for o in outlines:
        by_meter.setdefault((o.meter, o.sheet[0]), []).append(o)
    genres = list(fams)
    moods = labels.moods()
    out = []
    for i in range(ctx.mma_pieces):
        genre = genres[i % len(genres)]
        target = moods[(i // len(genres)) % len(moods)]  # every genre gets every mood in turn
        high = target in ("happy", "tense")  # arousal
        mode = "major" if target in ("happy", "calm") else "minor"  # valence
        fam = fams[genre]
        choices = [key for key in by_meter if key[0] in fam]
        if not choices:
            continue
        sources = sorted({key[1] for key in choices})
        source = rng.choice(sources)  # POP909 and Nottingham equally often where both fit
        meter_keys = sorted(key for key in choices if key[1] == source)
        weights = [len(by_meter[k]) for k in meter_keys]
        outline = rng.choice(by_meter[rng.choices(meter_keys, weights)[0]])
        usable = outline.last_bar - outline.first_bar + 1
        n_bars = min(rng.choice(opts["bars"]), usable)
        if outline.meter != "3/4" and n_bars % 2:
            n_bars -= 1
        slots = max((usable - n_bars) // 4, 0)
        start_bar = outline.first_bar + 4 * rng.randint(0, slots)
        entries = fam[outline.meter]
        slow = [e for e in entries if groove_range(e, fam)[2] <= opts["slow_max_bpm"]]
        fast = [e for e in entries if e not in slow]
        pool = (fast if high else slow) or entries
        first = rng.choice(pool)
        grooves = [first]
        if rng.random() < opts["second_groove_prob"] and len(pool) > 1:
            grooves.append(rng.choice([e for e in pool if e != first]))
        name, lo, hi = groove_range(first, fam)
        span = hi - lo
        bpm = rng.randint(lo + int(0.4 * span), hi) if high else rng.randint(lo, lo + int(0.5 * span))
        lead = rng.choice(fam["leads"])
        drums = None
        candidates = [p for p in drums_by.get((genre, outline.split), [])
                      if (p.bpm > opts["slow_max_bpm"]) == high]
        if outline.meter == "4/4" and candidates and rng.random() < opts["groove_drums_prob"]:
            perf = rng.choice(candidates)
            drums, bpm = perf.path, perf.bpm
        recipe = Recipe(sheet=outline.sheet, genre=genre,
                        grooves=tuple(groove_range(g, fam)[0] for g in grooves), bpm=bpm, mode=mode,
                        start_bar=start_bar, n_bars=n_bars, lead_program=lead, drums=drums,
                        seed=rng.randrange(1, 2**31), target_mood=target)
        out.append((recipe, outline))
    return out


def specs(ctx: SourceContext) -> list[PieceSpec]:
    check_mma()
    planned = plan(ctx)
    if ctx.limit > 0:
        planned = planned[:ctx.limit]
    return [PieceSpec(piece=f"{NAME}/{i:05d}-{recipe.genre}", source=NAME, genre=recipe.genre, split=outline.split,
                      group=outline.group, recipe=recipe.to_json(), mode=recipe.mode)
            for i, (recipe, outline) in enumerate(planned)]


# ---- rendering (in build workers) ---------------------------------------------------------------------
def load_sheet(sheet: tuple, data_root: Path) -> LeadSheet:
    if sheet[0] == "pop909":
        return pop909.song_sheet(str(data_root / "pop909" / sheet[1]))
    if sheet[0] == "nottingham":
        return nottingham.tune_sheet(str(data_root / nottingham.ABC_DIR / f"{sheet[1]}.abc"), int(sheet[2]))
    raise SheetError(f"unknown lead sheet source {sheet[0]!r}")


def mma_text(sheet: LeadSheet, recipe: Recipe) -> str:
    """The MMA chart: seed, tempo, groove(s) and one line of chords (one per beat) per bar."""
    lines = [f"// moodstream {recipe.genre} arrangement of {'/'.join(map(str, recipe.sheet))}",
             f"RndSeed {recipe.seed}", f"Tempo {recipe.bpm}", f"Groove {recipe.grooves[0]}"]
    switch = sheet.n_bars // 2 if len(recipe.grooves) > 1 else -1
    for i, bar in enumerate(sheet.bars):
        if i == switch:
            lines.append(f"Groove {recipe.grooves[1]}")
        lines.append(f"{i + 1} " + " ".join(c.mma_name() if c is not None else "z" for c in bar))
    return "\n".join(lines) + "\n"


def render(spec: PieceSpec, data_root: Path):
    """The arrangement as a symusic Score (raises SheetError with the reason when it cannot be made)."""
    import symusic

    recipe = Recipe.from_json(spec.recipe)
    sheet = load_sheet(recipe.sheet, data_root).window(recipe.start_bar, recipe.n_bars).in_mode(recipe.mode)
    with tempfile.TemporaryDirectory(prefix="moodstream-mma-") as tmp:
        src, out = Path(tmp) / "piece.mma", Path(tmp) / "piece.mid"
        src.write_text(mma_text(sheet, recipe))
        try:
            proc = subprocess.run([MMA_BIN, "-f", str(out), str(src)], capture_output=True, text=True,
                                  timeout=MMA_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SheetError(f"mma failed: {err}") from err
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        if proc.returncode or errors or not out.is_file():
            raise SheetError(f"mma failed: {(errors or ['exit code %d' % proc.returncode])[0][:120]}")
        score = symusic.Score(str(out))
    tpq = score.ticks_per_quarter
    lead = symusic.Track(name="Melody", program=recipe.lead_program, is_drum=False)
    for n in sheet.melody:
        lead.notes.append(symusic.Note(int(round(n.start_beats * tpq)), max(int(round(n.length_beats * tpq)), 1),
                                       int(n.pitch), int(n.velocity)))
    score.tracks.append(lead)
    if recipe.drums:
        _replace_drums(score, data_root / recipe.drums, sheet.n_bars * BEATS_PER_BAR[sheet.meter])
    return score


def _replace_drums(score, performance: Path, n_beats: int) -> None:
    """MMA's drum tracks out, the Groove performance in (looped by whole bars to cover `n_beats`)."""
    import symusic

    perf = groove.remap_drums(symusic.Score(str(performance)))
    perf_tpq, tpq = perf.ticks_per_quarter, score.ticks_per_quarter
    notes = sorted(((n.time, n.duration, n.pitch, n.velocity) for t in perf.tracks if t.is_drum for n in t.notes))
    if not notes:
        raise SheetError(f"{performance.name}: no drum notes")
    period_beats = max(int(notes[-1][0] / perf_tpq) // 4 * 4, 4)
    drums = symusic.Track(name="Drums", program=0, is_drum=True)
    offset = 0
    while offset < n_beats:
        for time, duration, pitch, velocity in notes:
            beat = time / perf_tpq
            if beat >= period_beats or offset + beat >= n_beats:
                continue
            drums.notes.append(symusic.Note(int(round((offset + beat) * tpq)),
                                            max(int(round(duration / perf_tpq * tpq)), 1), pitch, velocity))
        offset += period_beats
    kept = [t for t in score.tracks if not t.is_drum]
    score.tracks.clear()
    for t in kept:
        score.tracks.append(t)
    score.tracks.append(drums)
