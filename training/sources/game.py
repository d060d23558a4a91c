"""Fan-sequenced video-game music (shared/data `game/`, General MIDI/XG, multi-instrument): genre game
(labels.json `manifest_style`: videogame); mood derived. Group and split as the manifest gives them (the
first word of the file name, often the game or series).
"""

from __future__ import annotations

from training.labels import genre_for
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest, unique_paths

NAME = "game"
MANIFEST_SOURCE = "VGM-fan"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = [PieceSpec(piece=f"{NAME}/{row.path.removeprefix('game/').removesuffix('.mid')}", source=NAME,
                     genre=genre_for("manifest_style", row.style), split=row.split, group=f"{NAME}:{row.group}",
                     path=str(ctx.data_root / row.path))
           for row in unique_paths(read_manifest(ctx.data_root, MANIFEST_SOURCE))]
    return limited(out, ctx)
