"""MidiCaps + Lakh MIDI (the original design's corpus, for users who have it): JSON lines with `location`
(relative to the Lakh root, e.g. lmd_full/1/1a07….mid), `genre`/`genre_prob` and `mood`/`mood_prob`
(MTG-Jamendo tags, best first), `key`, `tempo`, `test_set` and more.

Genre: the first tag that labels.json `midicaps_genre` maps to one of ours (else any). Mood: the first
mood/theme tag that `midicaps_mood` maps to a quadrant, else derived from the music (mode from `key`);
both are machine labels, so mood_origin is `derived`. test_set → validation. Group = the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from model.errors import MoodstreamError
from model.vocab import ANY
from training.labels import NO_MOOD, first_mapped, mode_from_key_name
from training.sources.base import PieceSpec, SourceContext, limited

NAME = "midicaps"


def read_records(path: Path) -> list[dict]:
    """The JSON-lines records; one error naming the file (and line) when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise MoodstreamError(f"{path}: MidiCaps label file unreadable ({err}); pass the JSON-lines file "
                              "with --midicaps") from err
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("location"), str):
                raise ValueError("no `location` string")
        except ValueError as err:
            raise MoodstreamError(f"{path}: line {n} is not a MidiCaps record ({err}); expected JSON lines "
                                  "with location, genre, mood, key, test_set") from err
        records.append(record)
    return records


def specs(ctx: SourceContext) -> list[PieceSpec]:
    if ctx.midicaps is None or ctx.lakh_root is None:
        raise MoodstreamError("source midicaps needs --midicaps FILE.jsonl and --lakh-root DIR")
    root = Path(ctx.lakh_root)
    if not root.is_dir():
        raise MoodstreamError(f"{root}: Lakh root not found; pass the folder that holds lmd_full/ with --lakh-root")
    out, seen = [], set()
    for record in read_records(Path(ctx.midicaps)):
        location = record["location"]
        piece = f"{NAME}/{Path(location).stem}"
        if piece in seen:  # MidiCaps lists each file once; ignore accidental repeats
            continue
        seen.add(piece)
        genre = first_mapped("midicaps_genre", record.get("genre") or [], ANY) or ANY
        mood = first_mapped("midicaps_mood", record.get("mood") or [], NO_MOOD)
        key = record.get("key")
        out.append(PieceSpec(piece=piece, source=NAME, genre=genre,
                             split="validation" if record.get("test_set") else "train", group=f"{NAME}:{location}",
                             mood=mood, mood_origin="derived", path=str(root / location),
                             mode=mode_from_key_name(key) if isinstance(key, str) else None))
    return limited(out, ctx)
