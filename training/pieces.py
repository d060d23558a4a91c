"""Labelled real pieces, the classifier's and the judge's material: one split of a built dataset
(`load_dataset_pieces`) or the rows of a manifest.csv in the shared data's format (`read_manifest`,
`load_manifest_pieces`, labelled in our taxonomy by `manifest_labels`). Unreadable files are skipped and counted.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

# Fallback when training/labels.py (the corpus's label mapping) is absent: manifest styles → our genres.
STYLE_TO_GENRE = {
    "pop_piano": "pop", "folk": "folk", "rock": "rock", "punk": "rock", "funk": "funk", "soul": "funk",
    "jazz": "jazz", "latin": "latin", "afrocuban": "latin", "blues": "blues", "country": "country", "pop": "pop",
    "dance": "electronic",
}


@dataclass(frozen=True)
class LabelledPiece:
    """One real piece as token ids (a conditioning block first is fine) with its labels."""

    name: str
    ids: np.ndarray  # (T,) int token ids
    genre: str  # "any" = no genre label
    mood: str  # "any" = no mood label
    mood_origin: str  # "human", "derived" or "" (no mood)
    split: str
    source: str = ""
    group: str = ""  # what must stay in one split (an artist, a song, a tune); "" = the piece alone


def load_dataset_pieces(dataset_dir: str | Path, split: str) -> list[LabelledPiece]:
    """Pieces of one split of a built dataset directory (training.dataset.TokenDataset), each with its
    conditioning block [Genre_g, Mood_m] put back in front (the shards hold music tokens only)."""
    from model.vocab import Conditions
    from training.dataset import TokenDataset

    dataset = TokenDataset(dataset_dir)
    vocab = dataset.vocab
    pieces = []
    for row in dataset.pieces(split):
        genre = row.get("genre") or "any"
        mood = row.get("mood") or "any"
        origin = row.get("mood_origin") or ""
        if mood == "any" or origin == "none":
            mood, origin = "any", ""
        block = vocab.condition_ids(Conditions(genre if genre in vocab.genre_ids else "any",
                                               mood if mood in vocab.mood_ids else "any"))
        ids = np.concatenate([np.asarray(block, dtype=np.int64), np.asarray(dataset.tokens(row), dtype=np.int64)])
        pieces.append(LabelledPiece(name=str(row.get("piece", "")), ids=ids, genre=genre, mood=mood,
                                    mood_origin=origin, split=split, source=str(row.get("source", "")),
                                    group=str(row.get("group") or "")))
    return pieces


MANIFEST_COLUMNS = ("path", "style", "mood")


def read_manifest(manifest: str | Path) -> list[dict]:
    """Rows of a manifest.csv (format of ../shared/data/manifest.csv); errors name missing columns/files."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise MoodstreamError(f"{manifest}: manifest not found")
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in MANIFEST_COLUMNS if c not in columns]
        if missing:
            raise MoodstreamError(f"{manifest}: missing column(s) {', '.join(missing)} "
                                  f"(need {', '.join(MANIFEST_COLUMNS)}; optional: split, source, group)")
        rows = list(reader)
    absent = [r["path"] for r in rows if not (manifest.parent / r["path"]).is_file()]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise MoodstreamError(f"{manifest}: {len(absent)} file(s) not found: {', '.join(absent[:3])}{more} "
                              "(paths are relative to the manifest's folder)")
    return rows


def manifest_labels(row: dict, score, genres: Sequence[str], moods: Sequence[str]) -> tuple[str, str, str]:
    """(genre, mood, mood_origin) of a manifest row in our taxonomy, by the corpus's label mapping
    (training/labels.py): genre from `style` (Groove styles by their own table), mood from the `mood`
    column or the valence/arousal signs (human), else derived from the music (mode, tempo, density).
    'any' where nothing gives a label."""
    style = (row.get("style") or "").strip().lower()
    mood = (row.get("mood") or "").strip().lower()
    try:
        from training import labels
    except ImportError:  # the corpus's mapping is not there: map the obvious style names only
        genre = STYLE_TO_GENRE.get(style, "any")
        origin = "human" if mood else ""
    else:
        name = Path(row.get("path", "")).name
        if row.get("source") == "GrooveMIDI" or style in labels.table("groove_style"):
            genre = labels.genre_for("groove_style", style.split("/")[0])
        elif style in labels.table("manifest_style"):
            genre = labels.genre_for("manifest_style", style)
        elif name in labels.table("multitrack"):
            genre = labels.genre_for("multitrack", name)
        else:
            genre = style if style in genres else "any"
        origin = "human" if mood else ""
        valence, arousal = (row.get("valence") or "").strip(), (row.get("arousal") or "").strip()
        if not mood and valence and arousal:
            mood, origin = labels.quadrant_mood(int(float(valence)), int(float(arousal))), "human"
        if not mood:
            evidence = labels.score_evidence(score)
            if evidence is not None:
                mood, origin = labels.derive_mood(evidence), "derived"
    genre = genre if genre in genres else "any"
    if mood not in moods or mood == "any":
        mood, origin = "any", ""
    return genre, mood, origin


def load_manifest_pieces(manifest: str | Path, vocab, split: str | None, progress: bool = True
                         ) -> list[LabelledPiece]:
    """Encode the manifest's files (rows of `split` if the manifest has a split column; all rows if
    `split` is None or there is no such column). Unreadable MIDI files are skipped and counted."""
    from tqdm import tqdm

    from model.vocab import Conditions, load_score

    manifest = Path(manifest)
    rows = read_manifest(manifest)
    if split is not None and rows and "split" in rows[0]:
        rows = [r for r in rows if (r.get("split") or "").strip() == split]
    pieces, skipped = [], []
    for row in tqdm(rows, desc=f"encode {manifest.name}", unit="file", disable=not progress, leave=False):
        try:
            score = load_score(manifest.parent / row["path"])
            genre, mood, origin = manifest_labels(row, score, vocab.genres, vocab.moods)
            ids = vocab.encode(score, Conditions(genre, mood))
        except Exception as err:  # corrupt MIDI: symusic/MidiTok raise assorted errors
            skipped.append(row["path"])
            log.warning("skipping %s: %s", row["path"], err)
            continue
        pieces.append(LabelledPiece(name=row["path"], ids=np.asarray(ids, dtype=np.int64), genre=genre, mood=mood,
                                    mood_origin=origin, split=(row.get("split") or "").strip(),
                                    source=row.get("source", ""), group=(row.get("group") or "").strip()))
    if skipped:
        log.warning("%s: skipped %d unreadable file(s)", manifest, len(skipped))
    return pieces
