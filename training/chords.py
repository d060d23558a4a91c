"""Chord symbols for the arrangement generator: parse POP909 (Harte) and ABC names, write MMA names,
and move chords and melody notes to the parallel mode.

A `Chord` is a root pitch class and a quality from `QUALITIES`. The parallel-mode map works on pitch
classes relative to the tonic: major → natural minor lowers degrees 3, 6, 7 (4→3, 9→8, 11→10 semitones);
minor → major raises them back. Chords are mapped tone by tone and renamed by their new interval set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# quality → intervals above the root (semitones)
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "minmaj7": (0, 3, 7, 11), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "7sus4": (0, 5, 7, 10), "9": (0, 2, 4, 7, 10),
}
MMA_SUFFIX = {"maj": "", "min": "m", "dim": "dim", "aug": "aug", "sus2": "sus2", "sus4": "sus4", "7": "7",
              "maj7": "M7", "min7": "m7", "minmaj7": "mM7", "dim7": "dim7", "hdim7": "m7b5", "maj6": "6",
              "min6": "m6", "7sus4": "7sus4", "9": "9"}
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_HARTE_QUALITY = {"maj": "maj", "min": "min", "dim": "dim", "aug": "aug", "sus2": "sus2", "sus4": "sus4",
                  "7": "7", "maj7": "maj7", "min7": "min7", "minmaj7": "minmaj7", "dim7": "dim7",
                  "hdim7": "hdim7", "maj6": "maj6", "min6": "min6", "sus4(b7)": "7sus4", "9": "9"}
# ABC chord suffixes (after the root) → quality; longest match first
_ABC_QUALITY = (("maj7", "maj7"), ("m7b5", "hdim7"), ("dim7", "dim7"), ("7sus4", "7sus4"), ("sus4", "sus4"),
                ("sus2", "sus2"), ("sus", "sus4"), ("min7", "min7"), ("mmaj7", "minmaj7"), ("m7", "min7"),
                ("m6", "min6"), ("min", "min"), ("dim", "dim"), ("aug", "aug"), ("M7", "maj7"), ("o7", "dim7"),
                ("o", "dim"), ("+", "aug"), ("m", "min"), ("9", "9"), ("7", "7"), ("6", "maj6"), ("", "maj"))

TO_MINOR = {4: 3, 9: 8, 11: 10}
TO_MAJOR = {3: 4, 8: 9, 10: 11}


@dataclass(frozen=True)
class Chord:
    root: int  # pitch class 0..11
    quality: str  # key of QUALITIES

    def __post_init__(self):
        if not 0 <= self.root < 12:
            raise ValueError(f"Chord.root must be a pitch class 0..11, got {self.root}")
        if self.quality not in QUALITIES:
            raise ValueError(f"Chord.quality {self.quality!r} unknown; known: {', '.join(QUALITIES)}")

    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.root + i) % 12 for i in QUALITIES[self.quality])

    def mma_name(self) -> str:
        return NOTE_NAMES[self.root] + MMA_SUFFIX[self.quality]


def note_pc(name: str) -> int:
    """Pitch class of a note name such as 'Gb', 'F#', 'c'."""
    pc = _LETTER_PC[name[0].upper()]
    for accidental in name[1:]:
        pc += {"#": 1, "b": -1}.get(accidental, 0)
    return pc % 12


def parse_harte(label: str) -> Chord | None:
    """A POP909 label ('Gb:min7', 'C:maj/3', 'A:sus4(b7)', 'N') → Chord; None for no-chord or unknown."""
    label = label.strip()
    if ":" not in label:
        return None
    root, quality = label.split(":", 1)
    quality = quality.split("/", 1)[0]  # inversions keep the chord; the arranger voices it
    if quality not in _HARTE_QUALITY or not re.fullmatch(r"[A-G][#b]?", root):
        return None
    return Chord(note_pc(root), _HARTE_QUALITY[quality])


def parse_abc_chord(symbol: str) -> Chord | None:
    """An ABC chord symbol ('Em', 'D7', 'F#m7', 'G/B', 'Bb') → Chord; None if it is not a chord."""
    match = re.fullmatch(r"([A-G])([#b]?)([^/(]*)(?:/.*)?(?:\(.*\))?", symbol.strip())
    if not match:
        return None
    letter, accidental, rest = match.groups()
    for suffix, quality in _ABC_QUALITY:
        if rest == suffix:
            return Chord(note_pc(letter + accidental), quality)
    return None


def _mode_map(to_mode: str) -> dict[int, int]:
    if to_mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {to_mode!r}")
    return TO_MINOR if to_mode == "minor" else TO_MAJOR


def change_mode_pc(pc: int, tonic: int, to_mode: str) -> int:
    """A pitch class moved to the parallel `to_mode` of the key on `tonic`."""
    degree = (pc - tonic) % 12
    return (tonic + _mode_map(to_mode).get(degree, degree)) % 12


def change_mode_pitch(pitch: int, tonic: int, to_mode: str) -> int:
    """A MIDI pitch moved to the parallel mode (moves by at most a semitone, same octave side)."""
    return pitch + (change_mode_pc(pitch % 12, tonic, to_mode) - pitch % 12 + 6) % 12 - 6


def change_mode_chord(chord: Chord, tonic: int, to_mode: str) -> Chord:
    """A chord moved to the parallel mode: each tone mapped, then renamed by its interval set."""
    tones = {change_mode_pc(pc, tonic, to_mode) for pc in chord.pitch_classes()}
    root = change_mode_pc(chord.root, tonic, to_mode)
    intervals = frozenset((t - root) % 12 for t in tones)
    best, best_score = chord.quality, -99
    for quality, ivs in QUALITIES.items():
        score = len(intervals & set(ivs)) * 2 - len(intervals ^ set(ivs))
        if score > best_score:
            best, best_score = quality, score
    return Chord(root, best)
