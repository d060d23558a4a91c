"""Source adapters: each module turns one corpus into `PieceSpec`s (what to tokenize, with which labels).

An adapter exposes `NAME` and `specs(ctx: SourceContext) -> list[PieceSpec]`; reading the specs is cheap
(labels and file lists only), the heavy work (loading, generating, tokenizing) happens in build workers.
`SOURCES` lists them in build order; `load(name)` imports one.
"""

from __future__ import annotations

import importlib

SOURCES = ("emopia", "vgmidi", "pop909", "nottingham", "groove", "multitrack", "band", "game", "classical", "mma",
           "midicaps")
DEFAULT_SOURCES = ("emopia", "vgmidi", "pop909", "nottingham", "groove", "multitrack", "band", "game", "classical",
                   "mma")


def load(name: str):
    """The adapter module for a source name."""
    from model.errors import MoodstreamError

    if name not in SOURCES:
        raise MoodstreamError(f"unknown source {name!r}; valid sources: {', '.join(SOURCES)}")
    return importlib.import_module(f"training.sources.{name}")
