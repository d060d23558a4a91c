"""Fan-sequenced video-game music (shared/data `game/`, General MIDI/XG, multi-instrument): genre game
(labels.json `manifest_style`: videogame); mood derived. Group and split as the manifest gives them (the
first word of the file name, often the game or series).
"""

from __future__ import annotations

from training.sources.base import PieceSpec, SourceContext, folder_specs

NAME = "game"
MANIFEST_SOURCE = "VGM-fan"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    return folder_specs(ctx, NAME, MANIFEST_SOURCE, "game")
