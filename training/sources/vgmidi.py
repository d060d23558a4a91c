"""VGMIDI: piano arrangements of video-game music with human valence/arousal (±1, 30 raters), used as
they are. Genre game (labels.json `manifest_style`: videogame_piano).

Group = the piece (its phrases `_0`, `_1` … stay together); the manifest's own group (the game) crosses its
splits, and the manifest split is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.labels import genre_for, quadrant_mood
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "vgmidi"
MANIFEST_SOURCE = "VGMIDI"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        stem = Path(row.path).stem
        mood = row.mood or None
        if mood is None and row.valence and row.arousal:
            mood = quadrant_mood(int(row.valence), int(row.arousal))
        out.append(PieceSpec(
            piece=f"{NAME}/{stem}", source=NAME, genre=genre_for("manifest_style", row.style),
            split=row.split, group=f"{NAME}:{re.sub(r'_[0-9]+$', '', stem)}",
            mood=mood, mood_origin="human" if mood else "derived", path=str(ctx.data_root / row.path)))
    return limited(out, ctx)
