"""POP909: Chinese pop songs as piano arrangements (MELODY, BRIDGE, PIANO tracks) with chord, beat and key
annotations. Genre pop; mood derived (mode from `key_audio.txt`, tempo and density from the MIDI).

`song_sheet(song_dir)` turns a song into a lead sheet for the arrangement generator: bars from the
downbeats of `beat_midi.txt`, one chord per beat from `chord_midi.txt`, the MELODY track mapped from
seconds onto the beat grid. Group = the song; the manifest split is kept.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from training.chords import note_pc, parse_harte
from training.labels import genre_for
from training.leadsheet import LeadNote, LeadSheet, SheetError
from training.sources.base import PieceSpec, SourceContext, limited, read_manifest

NAME = "pop909"
MANIFEST_SOURCE = "POP909"


def song_key(song_dir: Path) -> tuple[int, str, int]:
    """(tonic pc, mode, number of key segments) from key_audio.txt."""
    path = song_dir / "key_audio.txt"
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        tonic_name, quality = rows[0][2].split(":")
    except (OSError, IndexError, ValueError) as err:
        raise SheetError(f"{path}: key file unreadable ({err})") from err
    mode = "minor" if quality.startswith("min") else "major"
    return note_pc(tonic_name), mode, len(rows)


def specs(ctx: SourceContext) -> list[PieceSpec]:
    out = []
    for row in read_manifest(ctx.data_root, MANIFEST_SOURCE):
        path = ctx.data_root / row.path
        try:
            _, mode, _ = song_key(path.parent)
        except SheetError:
            mode = None  # the build estimates it from the notes
        out.append(PieceSpec(piece=f"{NAME}/{path.parent.name}", source=NAME,
                             genre=genre_for("manifest_style", row.style), split=row.split,
                             group=f"{NAME}:{row.group}", path=str(path), mode=mode))
    return limited(out, ctx)


@lru_cache(maxsize=1024)
def song_chords(song_dir: str | Path) -> tuple[tuple, tuple, int]:
    """(bars of one chord per beat, beat times in s, index of the first downbeat) from the text files alone."""
    import numpy as np

    song_dir = Path(song_dir)
    try:
        beats = np.array([[float(x) for x in line.split()[:3]]
                          for line in (song_dir / "beat_midi.txt").read_text().splitlines() if line.strip()])
        chords = [line.split("\t") for line in (song_dir / "chord_midi.txt").read_text().splitlines() if line.strip()]
    except (OSError, ValueError, IndexError) as err:
        raise SheetError(f"{song_dir}: beat/chord annotations unreadable ({err})") from err
    if beats.ndim != 2 or beats.shape[1] < 3:
        raise SheetError(f"{song_dir}: beat_midi.txt needs three columns")
    downbeats = np.flatnonzero(beats[:, 2] == 1)
    if len(downbeats) < 8:
        raise SheetError(f"{song_dir.name}: fewer than 8 bars annotated")
    gaps = np.diff(downbeats)
    if np.mean(gaps == 4) < 0.9:
        raise SheetError(f"{song_dir.name}: not in 4/4 (downbeats every {int(np.median(gaps))} beats)")
    times = beats[:, 0]
    first = int(downbeats[0])
    n_bars = (len(times) - first) // 4
    segments = [(float(c[0]), float(c[1]), parse_harte(c[2])) for c in chords if len(c) >= 3]
    starts = np.array([seg[0] for seg in segments])

    def chord_at(t: float):
        i = int(np.searchsorted(starts, t, side="right")) - 1
        if i < 0 or t >= segments[i][1]:
            return None
        return segments[i][2]

    bars = []
    for b in range(n_bars):
        row = []
        for k in range(4):
            i = first + 4 * b + k
            step = times[i + 1] - times[i] if i + 1 < len(times) else times[i] - times[i - 1]
            row.append(chord_at(times[i] + 0.1 * step))  # the chord sounding just after the beat
        bars.append(tuple(row))
    return tuple(bars), tuple(float(t) for t in times), first


@lru_cache(maxsize=64)
def song_sheet(song_dir: str | Path) -> LeadSheet:
    """The song as a 4/4 lead sheet (SheetError if it is in another meter or lacks annotations)."""
    import numpy as np
    import symusic

    song_dir = Path(song_dir)
    bars, times, first = song_chords(song_dir)
    times = np.asarray(times)
    midi = song_dir / f"{song_dir.name}.mid"
    try:
        score = symusic.Score(str(midi)).to("second")
    except Exception as err:  # symusic raises assorted errors on bad files
        raise SheetError(f"{midi}: unreadable ({err})") from err
    tracks = [t for t in score.tracks if t.name.strip().upper() == "MELODY"]
    if not tracks:
        raise SheetError(f"{midi.name}: no MELODY track")
    index = np.arange(len(times), dtype=np.float64)
    last_step = times[-1] - times[-2]

    def beat_of(t: float) -> float:
        if t > times[-1]:
            return index[-1] + (t - times[-1]) / last_step
        return float(np.interp(t, times, index))

    melody = []
    for note in tracks[0].notes:
        start = beat_of(note.time) - first
        end = beat_of(note.time + note.duration) - first
        if start >= 0 and end > start:
            melody.append(LeadNote(round(start * 8) / 8, max(round((end - start) * 8) / 8, 0.125),
                                   int(note.pitch), int(note.velocity)))
    tonic, mode, n_keys = song_key(song_dir)
    return LeadSheet(meter="4/4", bars=bars, melody=tuple(melody), tonic=tonic, mode=mode,
                     can_change_mode=n_keys == 1)
