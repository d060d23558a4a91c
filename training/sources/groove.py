"""Groove MIDI Dataset: human drum performances (beats and fills) with styles. Genre from the style (first
part of `info.csv`'s style, e.g. 'jazz/funk' → jazz); mood `any` (drums alone carry no mode, so no valence).

The kit's extra articulations (TD-11 notes 22, 26, 58) are mapped to General MIDI before tokenizing
(`prepare`). Group = the performance: the manifest's own group (the drummer) crosses its splits, and the
manifest split is kept. `performances(ctx)` lists beats for the arrangement generator's drum parts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from model.errors import MoodstreamError
from model.vocab import ANY
from training.labels import genre_for
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "groove"
MANIFEST_SOURCE = "GrooveMIDI"
# Roland TD-11 articulations that General MIDI lacks → the GM drum they are played as (Groove's docs)
TD11_TO_GM = {22: 42, 26: 46, 58: 43}


@dataclass(frozen=True)
class Performance:
    path: str  # relative to the data root
    style: str  # full style, e.g. "funk/purdieshuffle"
    genre: str
    bpm: int
    kind: str  # beat | fill
    meter: str  # "4-4"
    duration_s: float
    split: str


@lru_cache(maxsize=4)
def _info(data_root: str) -> dict[str, dict]:
    path = Path(data_root) / "groove" / "info.csv"
    try:
        with path.open(newline="") as f:
            return {f"groove/{row['midi_filename']}": row for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error) as err:
        raise MoodstreamError(f"{path}: Groove label file unreadable ({err}); restore the shared data") from err


def style_genre(style: str) -> str:
    return genre_for("groove_style", style.split("/", 1)[0].strip().lower())


def specs(ctx: SourceContext) -> list[PieceSpec]:
    info = _info(str(ctx.data_root))
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        style = info.get(row.path, {}).get("style", row.style)
        out.append(PieceSpec(piece=f"{NAME}/{row.path.removeprefix('groove/').removesuffix('.mid')}", source=NAME,
                             genre=style_genre(style), split=row.split, group=f"{NAME}:{row.path}",
                             mood=ANY, mood_origin="none", path=str(ctx.data_root / row.path), prepare="td11"))
    return limited(out, ctx)


def performances(ctx: SourceContext) -> list[Performance]:
    """Every performance in the manifest with its info.csv labels (manifest split)."""
    info = _info(str(ctx.data_root))
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        meta = info.get(row.path)
        if meta is None:
            continue
        out.append(Performance(path=row.path, style=meta["style"], genre=style_genre(meta["style"]),
                               bpm=int(meta["bpm"]), kind=meta["beat_type"], meter=meta["time_signature"],
                               duration_s=float(meta["duration"]), split=row.split))
    return out


def remap_drums(score):
    """The score with TD-11-only drum notes moved to their General MIDI equivalents (in place)."""
    for track in score.tracks:
        if track.is_drum:
            for note in track.notes:
                note.pitch = TD11_TO_GM.get(note.pitch, note.pitch)
    return score


def prepare(score, spec: PieceSpec):
    return remap_drums(score) if spec.prepare == "td11" else score
