"""Bach sequences from jsbach.net (shared/data `classical/`: organ, keyboard and ensemble works): genre
classical (labels.json `manifest_style`); mood derived. Group and split as the manifest gives them (the work).
"""

from __future__ import annotations

from training.labels import genre_for
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest, unique_paths

NAME = "classical"
MANIFEST_SOURCE = "jsbach"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = [PieceSpec(piece=f"{NAME}/{row.path.removeprefix('classical/').removesuffix('.mid')}", source=NAME,
                     genre=genre_for("manifest_style", row.style), split=row.split, group=f"{NAME}:{row.group}",
                     path=str(ctx.data_root / row.path))
           for row in unique_paths(read_manifest(ctx.data_root, MANIFEST_SOURCE))]
    return limited(out, ctx)
