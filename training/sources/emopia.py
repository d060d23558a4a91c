"""EMOPIA: pop piano clips with human valence/arousal quadrants (Q1 happy … Q4 calm), used as they are.

Genre from the manifest style (pop_piano → pop); group = the song (clips of one song stay together).
"""

from __future__ import annotations

from pathlib import Path

from training.labels import genre_for
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "emopia"
MANIFEST_SOURCE = "EMOPIA"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        out.append(PieceSpec(
            piece=f"{NAME}/{Path(row.path).stem}", source=NAME,
            genre=genre_for("manifest_style", row.style), split=row.split, group=f"{NAME}:{row.group}",
            mood=row.mood or None, mood_origin="human" if row.mood else "derived",
            path=str(ctx.data_root / row.path)))
    return limited(out, ctx)
