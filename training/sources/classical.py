"""Bach sequences from jsbach.net (shared/data `classical/`: organ, keyboard and ensemble works): genre
classical (labels.json `manifest_style`); mood derived. Group and split as the manifest gives them (the work).
"""

from __future__ import annotations

from training.sources.base import PieceSpec, SourceContext, folder_specs

NAME = "classical"
MANIFEST_SOURCE = "jsbach"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    return folder_specs(ctx, NAME, MANIFEST_SOURCE, "classical")
