"""Labels: every source's genre/mood labels mapped to ours (from `labels.json`), and derived moods.

`mapping()` reads the one mapping file; `genre_for(table, label)` and `mood_for(table, label)` look a
label up. Pieces without a human mood get one from musical evidence (`derive_mood`): valence from the
mode (major +, minor −), arousal from tempo and note density. `estimate_mode` finds the mode of a score
with the Krumhansl–Kessler key profiles when no label names the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from model.errors import MoodstreamError
from model.vocab import ANY

LABELS_FILE = Path(__file__).resolve().parent / "labels.json"
MIDI_DEFAULT_BPM = 120.0  # the tempo of a MIDI file that states none (SMF 1.0)
NO_MOOD = "none"  # a source label that says nothing about valence/arousal
MOOD_ORIGINS = ("human", "derived", "none")

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first (Krumhansl 1990, "Cognitive Foundations").
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


@lru_cache(maxsize=4)
def mapping(path: str | Path = LABELS_FILE) -> dict:
    """The parsed mapping file; one error naming the file if it cannot be read."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MoodstreamError(f"{path}: label mapping file unreadable ({err}); restore it from git") from err
    for key in ("genres", "moods", "quadrants", "manifest_style", "groove_style", "multitrack", "band_style",
                "artist", "midicaps_genre", "midicaps_mood", "derived_mood"):
        if key not in data:
            raise MoodstreamError(f"{path}: label mapping has no {key!r} table; restore it from git")
    return data


def table(name: str) -> dict[str, str]:
    """One mapping table without its `_about`/notes entries."""
    return {k: v for k, v in mapping()[name].items() if not k.startswith("_")}


def genres() -> tuple[str, ...]:
    return tuple(mapping()["genres"])


def moods() -> tuple[str, ...]:
    return tuple(mapping()["moods"])


def genre_for(table_name: str, label: str) -> str:
    """Our genre for a source label (`any` when the table maps it so or does not know it)."""
    return table(table_name).get(label, ANY)


def mood_for(table_name: str, label: str) -> str | None:
    """Our mood for a source label; None when the label carries no mood."""
    mood = table(table_name).get(label, NO_MOOD)
    return None if mood == NO_MOOD else mood


def quadrant_mood(valence: int, arousal: int) -> str:
    """happy (+v +a), tense (−v +a), sad (−v −a), calm (+v −a)."""
    return table("quadrants")[f"{'+' if valence > 0 else '-'}1,{'+' if arousal > 0 else '-'}1"]


def first_mapped(table_name: str, labels: Sequence[str], missing: str) -> str | None:
    """The first label (best first) that maps to something other than `missing`, mapped; else None."""
    entries = table(table_name)
    for label in labels:
        target = entries.get(str(label).strip().lower(), missing)
        if target != missing:
            return target
    return None


# ---- derived moods -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """What a derived mood rests on: mode, tempo (None = the file states none), note density."""

    mode: str  # "major" | "minor"
    bpm: float | None
    onsets_per_s: float

    def __post_init__(self):
        if self.mode not in ("major", "minor"):
            raise ValueError(f"Evidence.mode must be 'major' or 'minor', got {self.mode!r}")
        if self.bpm is not None and not self.bpm > 0:
            raise ValueError(f"Evidence.bpm must be > 0, got {self.bpm!r}")
        if self.onsets_per_s < 0:
            raise ValueError(f"Evidence.onsets_per_s must be >= 0, got {self.onsets_per_s!r}")


def arousal_score(evidence: Evidence) -> float:
    """log2(bpm / ref_bpm) + log2(onsets_per_s / ref_onsets_per_s); ≥ 0 means high arousal.

    Tempo and density are the two strongest arousal cues in music-emotion studies (Gabrielsson &
    Lindström 2010); log ratios make "twice as fast" and "twice as dense" count the same.
    """
    rules = mapping()["derived_mood"]
    density = max(evidence.onsets_per_s, 1e-3)
    score = math.log2(density / rules["ref_onsets_per_s"])
    if evidence.bpm is not None:
        score += math.log2(evidence.bpm / rules["ref_bpm"])
    return score


def derive_mood(evidence: Evidence) -> str:
    """Valence from the mode, arousal from tempo and note density (rules in labels.json)."""
    valence = 1 if evidence.mode == "major" else -1
    arousal = 1 if arousal_score(evidence) >= 0 else -1
    return quadrant_mood(valence, arousal)


def mode_from_key_name(key: str) -> str | None:
    """'major'/'minor' from key names such as 'A minor', 'Gb:maj', 'Em', 'Ador', 'Gmix'; None if unknown."""
    text = key.strip().lower().replace(":", " ")
    if not text:
        return None
    if text in ("maj", "major", "ionian", "mixolydian", "lydian"):
        return "major"
    if text in ("min", "minor", "aeolian", "dorian", "phrygian", "locrian"):
        return "minor"
    words = text.split()
    tail = words[-1] if len(words) > 1 else text[1:].lstrip("#b")
    if tail.startswith(("maj", "ion", "mix", "lyd")) or tail == "":
        return "major"
    if tail.startswith(("min", "m", "aeo", "dor", "phr", "loc")):
        return "minor"
    return None


def estimate_mode(pitch_class_weights: Sequence[float]) -> str:
    """The mode of the best-correlating Krumhansl–Kessler key profile (24 keys) for a pitch-class histogram."""
    import numpy as np

    weights = np.asarray(pitch_class_weights, dtype=np.float64)
    if weights.shape != (12,) or not weights.any():
        raise ValueError("estimate_mode needs 12 pitch-class weights, not all zero")
    best_r, best_mode = -2.0, "major"
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(weights, np.roll(profile, tonic))[0, 1])
            if r > best_r:
                best_r, best_mode = r, mode
    return best_mode


def score_evidence(score, mode: str | None = None, seconds=None) -> Evidence | None:
    """Evidence from a symusic Score (ticks): `mode` if labels give it, else estimated from pitches.

    Density counts distinct non-drum onsets (10 ms apart) per second of music; None when the score has
    no pitched notes (drums only), which leaves valence unknown. `seconds`: the score already converted
    with `score.to("second")`, if the caller has it.
    """
    import numpy as np

    seconds = seconds if seconds is not None else score.to("second")
    notes = [(note.time, note.duration, note.pitch) for track in seconds.tracks if not track.is_drum
             for note in track.notes]
    if not notes:
        return None
    onset_s, dur_s, pitch = (np.array(column) for column in zip(*notes))
    return _pitched_evidence(onset_s, dur_s, pitch, mean_bpm(score), mode)


def notes_evidence(notes, min_onsets: int = 8) -> Evidence | None:
    """Evidence from parsed tokens (`training.musicstats.ParsedNotes`), measured as `score_evidence` measures a
    file, with the beat-weighted mean tempo (bars before any Tempo play at MIDI's 120). None with fewer than
    `min_onsets` distinct onsets: too little to judge."""
    import numpy as np

    pitched = notes.program >= 0
    bpm = np.where(np.isnan(notes.tempo_bpm), MIDI_DEFAULT_BPM, notes.tempo_bpm)  # (B,)
    s_per_beat = 60.0 / bpm
    bar_start_s = np.concatenate([[0.0], np.cumsum(notes.beats_per_bar * s_per_beat)])  # (B+1,)
    bar = notes.bar[pitched]
    onset_s = bar_start_s[bar] + (notes.onset_beats[pitched] - notes.bar_start_beats[bar]) * s_per_beat[bar]
    dur_s = notes.duration_beats[pitched] * s_per_beat[bar]
    mean_qpm = float((bpm * notes.beats_per_bar).sum() / max(notes.beats_per_bar.sum(), 1))
    return _pitched_evidence(onset_s, dur_s, notes.pitch[pitched], mean_qpm, min_onsets=min_onsets)


def _pitched_evidence(onset_s, dur_s, pitch, bpm: float, mode: str | None = None, min_onsets: int = 1
                      ) -> Evidence | None:
    """Evidence from pitched notes in seconds, (N,) arrays: distinct onsets (10 ms apart) per second from the
    first note's start to the last note's end (at least 1 s), the duration-weighted pitch-class histogram's
    mode unless `mode` is given. None with fewer than `min_onsets` distinct onsets."""
    import numpy as np

    n_onsets = np.unique(np.round(onset_s * 100).astype(np.int64)).size
    if n_onsets == 0 or n_onsets < min_onsets:
        return None
    histogram = np.bincount(pitch % 12, weights=dur_s, minlength=12)
    span_s = max(float((onset_s + dur_s).max() - onset_s.min()), 1.0)
    return Evidence(mode=mode or estimate_mode(histogram), bpm=bpm, onsets_per_s=n_onsets / span_s)


def mean_bpm(score) -> float:
    """Tick-weighted mean tempo in quarter notes per minute (a file without tempo plays at MIDI's 120)."""
    tempos = list(score.tempos)
    if not tempos:
        return MIDI_DEFAULT_BPM
    end = max(score.end(), tempos[-1].time + 1)
    total, weighted = 0, 0.0
    for i, tempo in enumerate(tempos):
        stop = tempos[i + 1].time if i + 1 < len(tempos) else end
        span = max(stop - tempo.time, 0)
        total += span
        weighted += span * tempo.qpm
    return weighted / total if total else float(tempos[0].qpm)
