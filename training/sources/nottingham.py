"""Nottingham: British/American folk tunes (melody + chords). Genre folk; mood derived with the mode taken
from the tune's ABC key (`nottingham_abc/<collection>.abc`, tune X:N ↔ `nottingham/<collection>N.mid`).

`tune_sheet(abc_path, number)` turns a tune into a lead sheet for the arrangement generator: 4/4, 2/2 and
2/4 (two bars paired) → 4/4; 3/4 → 3/4; 6/8 (two bars paired) → 12/8. Group = the tune: the manifest's own
group (the collection) crosses its splits, and the manifest split is kept.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from training.abc import AbcError, parse_tune, read_tunes
from training.labels import genre_for, mode_from_key_name
from training.leadsheet import LeadNote, LeadSheet, SheetError
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "nottingham"
MANIFEST_SOURCE = "Nottingham"
ABC_DIR = "nottingham_abc"
# ABC meter → (our meter, whole notes per beat, ABC bars per lead-sheet bar)
METERS = {"4/4": ("4/4", Fraction(1, 4), 1), "C": ("4/4", Fraction(1, 4), 1), "C|": ("4/4", Fraction(1, 4), 1),
          "2/2": ("4/4", Fraction(1, 4), 1), "2/4": ("4/4", Fraction(1, 4), 2), "3/4": ("3/4", Fraction(1, 4), 1),
          "6/8": ("12/8", Fraction(3, 8), 2)}


def file_tune(path: str | Path) -> tuple[str, int]:
    """('jigs', 242) for nottingham/jigs242.mid."""
    m = re.fullmatch(r"(.+?)(\d+)", Path(path).stem)
    if not m:
        raise ValueError(f"{path}: not a Nottingham tune file name")
    return m.group(1), int(m.group(2))


@lru_cache(maxsize=32)
def collection(abc_path: str) -> dict[int, object]:
    """X number → AbcTune for one ABC file (empty if the file is missing)."""
    path = Path(abc_path)
    return {t.number: t for t in read_tunes(path)} if path.is_file() else {}


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        name, number = file_tune(row.path)
        tune = collection(str(ctx.data_root / ABC_DIR / f"{name}.abc")).get(number)
        mode = mode_from_key_name(tune.key) if tune is not None else None
        out.append(PieceSpec(piece=f"{NAME}/{Path(row.path).stem}", source=NAME,
                             genre=genre_for("manifest_style", row.style), split=row.split,
                             group=f"{NAME}:{Path(row.path).stem}", path=str(ctx.data_root / row.path), mode=mode))
    return limited(out, ctx)


@lru_cache(maxsize=2048)
def tune_sheet(abc_path: str, number: int) -> LeadSheet:
    """Tune X:`number` of an ABC file as a lead sheet (SheetError with the reason if it cannot be)."""
    tune = collection(str(abc_path)).get(number)
    if tune is None:
        raise SheetError(f"{Path(abc_path).name}: no tune X:{number}")
    try:
        melody = parse_tune(tune)
    except AbcError as err:
        raise SheetError(f"{Path(abc_path).name} X:{number}: {err}") from err
    if melody.meter_text not in METERS:
        raise SheetError(f"{Path(abc_path).name} X:{number}: meter {melody.meter_text} has no groove")
    meter, beat, pair = METERS[melody.meter_text]
    beats_per_bar = {"4/4": 4, "3/4": 3, "12/8": 4}[meter]
    n_beats = int(melody.n_bars * melody.meter / beat)
    n_bars = n_beats // beats_per_bar
    chords, bars = list(melody.chords), []
    current, k = None, 0
    for b in range(n_bars * beats_per_bar):
        t = b * beat
        while k < len(chords) and chords[k][0] <= t:
            current = chords[k][1]
            k += 1
        if b % beats_per_bar == 0:
            bars.append([])
        bars[-1].append(current)
    notes = []
    for n in melody.notes:
        start = float(n.start / beat)
        if start < n_bars * beats_per_bar:
            accent = 100 if float(n.start / beat) % beats_per_bar == 0 else 88
            notes.append(LeadNote(start, float(n.length / beat), n.pitch, accent))
    if n_bars < 4:
        raise SheetError(f"{Path(abc_path).name} X:{number}: shorter than 4 bars")
    return LeadSheet(meter=meter, bars=tuple(tuple(b) for b in bars), melody=tuple(notes), tonic=melody.tonic,
                     mode=melody.mode, can_change_mode=not melody.key_changes)
