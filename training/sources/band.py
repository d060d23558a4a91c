"""Full-band song files (shared/data `band/`): the FreeMIDI/midiworld/mididb scrape (folders rock, pop,
country, hiphop, soul) and the jazz folder of another scrape. Genre from the folder (labels.json
`band_style`) unless the artist is known to be elsewhere (labels.json `artist`); mood derived.

Group = the artist. The manifest's `group` is a file-name prefix per folder, so one artist can carry
several keys (`oasis`, `oasis_dont`) and one key several artists (`david`): `artist_keys` joins a key to
the shortest other key it extends word by word, and splits keys that are only a first name or an article
(`NOT_ARTISTS`) by the longest known key the file name starts with, else its first two words. An artist
whose files the manifest puts in both splits goes wholly to the split holding most of them (ties:
validation); such pieces carry `split_from`, relabelled ones `genre_from`, and the build counts both.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from training.labels import genre_for, table
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest, unique_paths

NAME = "band"
MANIFEST_SOURCES = ("FreeMIDI-scrape", "KimSSung-jazz")
# Manifest keys that are a first name, an article, a number or an uploader's tag shared by different artists.
NOT_ARTISTS = frozenset({"015b", "2", "a", "aaron", "albert", "anita", "billy", "black", "bobby", "charlie", "chris",
                         "christina", "clay", "david", "eddie", "eric", "gary", "john", "michael", "the", "tina",
                         "tommy", "tony"})
# Keys that extend another artist's key but name someone else.
DISTINCT = frozenset({"blue_rodeo", "elvis_costello"})
# One artist spelt two ways by the scrape.
ALIASES = {"fourtops": "four_tops", "bad_finger": "badfinger"}


def file_words(path: str) -> str:
    """`band/jazz/Frank_Sinatra_-_Angel_Eyes.mid` → `frank_sinatra_angel_eyes` (the manifest's key style)."""
    return "_".join(w for w in re.split(r"[^0-9a-z]+", Path(path).stem.lower()) if w)


def artist_keys(rows) -> dict[str, str]:
    """Manifest path → artist key (see the module docstring)."""
    known = {r.group for r in rows} - NOT_ARTISTS

    def base(key: str) -> str:
        key = ALIASES.get(key, key)
        if key in DISTINCT:
            return key
        words = key.split("_")
        for n in range(1, len(words)):
            prefix = "_".join(words[:n])
            if prefix in known:
                return prefix
        return key

    out = {}
    for r in rows:
        key = r.group
        if key in NOT_ARTISTS or not key:
            stem = file_words(r.path)
            longest = max((k for k in known if stem.startswith(k + "_")), key=len, default=None)
            key = longest or "_".join(stem.split("_")[:2])
        out[r.path] = base(key)
    return out


def artist_splits(rows, keys: dict[str, str]) -> dict[str, str]:
    """Artist key → its one split: the manifest's, or where most of its files are when it names both."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[keys[r.path]][r.split] += 1
    return {k: ("validation" if c["validation"] >= c["train"] else "train") for k, c in counts.items()}


def specs(ctx: SourceContext) -> list[PieceSpec]:
    rows = unique_paths([r for r in read_manifest(ctx.data_root) if r.source in MANIFEST_SOURCES])
    keys = artist_keys(rows)
    splits = artist_splits(rows, keys)
    by_artist = table("artist")
    out = []
    for r in rows:
        artist = keys[r.path]
        folder_genre = genre_for("band_style", r.style)
        genre = by_artist.get(artist, folder_genre)
        split = splits[artist]
        out.append(PieceSpec(piece=f"{NAME}/{r.path.removeprefix('band/').removesuffix('.mid')}", source=NAME,
                             genre=genre, split=split, group=f"{NAME}:{artist}", path=str(ctx.data_root / r.path),
                             genre_from=folder_genre if genre != folder_genre else None,
                             split_from=r.split if split != r.split else None))
    return limited(out, ctx)
