"""MidiTok's multi-instrument test songs (full pop/rock arrangements with drums): genres from the song
titles (labels.json `multitrack`, our judgement; two unnamed files → any); mood derived. Group = the file.
"""

from __future__ import annotations

from pathlib import Path

from training.labels import genre_for
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "multitrack"
MANIFEST_SOURCE = "MidiTok-tests"


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        if not row.path.startswith("multitrack/"):
            continue
        name = Path(row.path).name
        out.append(PieceSpec(piece=f"{NAME}/{Path(row.path).stem}", source=NAME, genre=genre_for("multitrack", name),
                             split=row.split, group=f"{NAME}:{name}", path=str(ctx.data_root / row.path)))
    return limited(out, ctx)
