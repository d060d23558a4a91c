"""What every adapter shares: the piece spec, the build context and the shared data manifest.

A `PieceSpec` names one piece: a MIDI file (`path`) or a generation recipe (`recipe`, JSON text), its
genre, its mood if a label gives one (else the build derives it), its split and its group (the unit that
must stay inside one split). `read_manifest` reads `/work/shared/data/manifest.csv`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from model.errors import MoodstreamError
from training.labels import MOOD_ORIGINS, genre_for

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class PieceSpec:
    piece: str  # unique id, "<source>/<name>"
    source: str
    genre: str  # one of ours, or "any"
    split: str  # train | validation
    group: str  # pieces of one group never span two splits
    mood: str | None = None  # from a label; None = derive it from the music
    mood_origin: str = "derived"  # how `mood` was obtained when given: human | derived | none
    path: str | None = None  # a MIDI file ...
    recipe: str | None = None  # ... or a generation recipe (JSON text) for the source's `render`
    mode: str | None = None  # "major"/"minor" when a label names the key (evidence for derived moods)
    prepare: str | None = None  # name of a score fix-up the source applies before tokenizing
    genre_from: str | None = None  # the source label's genre when an artist table moved the piece elsewhere
    split_from: str | None = None  # the manifest's split when the piece moved to keep its group in one split

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"PieceSpec.split must be one of {SPLITS}, got {self.split!r} ({self.piece})")
        if self.mood_origin not in MOOD_ORIGINS:
            raise ValueError(f"PieceSpec.mood_origin must be one of {MOOD_ORIGINS}, got {self.mood_origin!r}")
        if (self.path is None) == (self.recipe is None):
            raise ValueError(f"PieceSpec {self.piece}: give exactly one of path and recipe")
        if self.mode not in (None, "major", "minor"):
            raise ValueError(f"PieceSpec.mode must be None, 'major' or 'minor', got {self.mode!r}")


@dataclass(frozen=True)
class SourceContext:
    """Where the data is and what the user asked for; adapters read only what they need."""

    data_root: Path
    seed: int = 0
    mma_pieces: int = 3600  # generated arrangements
    midicaps: Path | None = None  # MidiCaps JSON-lines file
    lakh_root: Path | None = None  # folder holding lmd_full/...
    limit: int = 0  # >0: at most this many pieces per source (small test builds)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestRow:
    path: str  # relative to the data root
    source: str
    style: str
    mood: str
    valence: str
    arousal: str
    kind: str
    group: str
    split: str


def find_data_root() -> Path:
    """$MOODSTREAM_DATA, else the nearest `shared/data` with a manifest above this checkout."""
    env = os.environ.get("MOODSTREAM_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data"
        if (candidate / "manifest.csv").is_file():
            return candidate
    return here.parents[3] / "shared" / "data"


def read_manifest(data_root: Path, source: str | None = None) -> list[ManifestRow]:
    """Rows of manifest.csv (optionally of one source); one error naming the file if unreadable."""
    path = Path(data_root) / "manifest.csv"
    columns = [f.name for f in fields(ManifestRow)]
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise MoodstreamError(f"{path}: missing column(s) {', '.join(missing)} (a manifest has the columns "
                                      f"{','.join(columns)}); fix its header or point --data-root elsewhere")
            rows = [ManifestRow(**{k: (row.get(k) or "") for k in columns}) for row in reader]
    except (OSError, TypeError, csv.Error, UnicodeDecodeError) as err:
        raise MoodstreamError(f"{path}: manifest unreadable ({err}); point --data-root at the shared data "
                              "folder (or set MOODSTREAM_DATA)") from err
    for row in rows:
        if row.split not in SPLITS:
            raise MoodstreamError(f"{path}: row {row.path!r} has split {row.split!r}, expected one of {SPLITS}")
    return [r for r in rows if source is None or r.source == source]


def unique_paths(rows: list[ManifestRow]) -> list[ManifestRow]:
    """The rows with a repeated path dropped (the manifest lists classical/bwv653.mid twice)."""
    seen: set[str] = set()
    return [r for r in rows if not (r.path in seen or seen.add(r.path))]


def folder_specs(ctx: SourceContext, name: str, manifest_source: str, folder: str) -> list[PieceSpec]:
    """One piece per manifest row of `manifest_source` (files under `folder/`): genre from the row's style
    (labels.json `manifest_style`), group and split as the manifest gives them, mood derived."""
    out = [PieceSpec(piece=f"{name}/{row.path.removeprefix(folder + '/').removesuffix('.mid')}", source=name,
                     genre=genre_for("manifest_style", row.style), split=row.split, group=f"{name}:{row.group}",
                     path=str(ctx.data_root / row.path))
           for row in unique_paths(read_manifest(ctx.data_root, manifest_source))]
    return limited(out, ctx)


def limited(specs: list, ctx: SourceContext) -> list:
    """At most ctx.limit specs for small test builds: half from validation where it has them, spread evenly."""
    if ctx.limit <= 0 or len(specs) <= ctx.limit:
        return specs

    def spread(items: list, n: int) -> list:
        if n >= len(items):
            return list(items)
        return [items[int(i * len(items) / n)] for i in range(n)]

    val = [s for s in specs if s.split == "validation"]
    train = [s for s in specs if s.split != "validation"]
    n_val = min(len(val), ctx.limit // 2)
    chosen = set(id(s) for s in spread(val, n_val) + spread(train, ctx.limit - n_val))
    return [s for s in specs if id(s) in chosen]
