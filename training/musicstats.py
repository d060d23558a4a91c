"""Musical statistics of REMI token streams, per bar, and distances between their distributions.

`parse_notes(table, ids)` reads notes straight from token ids (`table`: the shared `model.remi.RemiTable`;
the same rules MidiTok's decoder uses: a note is Pitch → Velocity → Duration, anything else in between
drops it); `bar_stats(parsed)` gives one value per bar for each name in STAT_NAMES (NaN where a bar has
nothing to measure); `stat_distances` compares generated with real bars by the 1-D Wasserstein distance divided by the real values' std.
Beats are the time signature's denominator beats (a 6/8 bar has 6); the grid is 8 steps per beat.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from model.remi import (BAR, DURATION, GENRE, MOOD, PITCH, PITCH_DRUM, POSITION, PROGRAM, TEMPO, TIME_SIG, VELOCITY,
                        RemiTable)

log = logging.getLogger(__name__)

STEPS_PER_BEAT = 8  # grid of the onset and sounding statistics (our vocabulary's Position resolution too)
STAT_NAMES = ("pitch_class_entropy", "polyphony", "notes_per_bar", "empty_beat_rate",
              "groove_consistency", "drum_share")
STAT_DESCRIPTIONS = {
    "pitch_class_entropy": "entropy (nats) of the pitch classes of the pitched notes starting in the bar",
    "polyphony": "mean number of pitched notes sounding at the 1/8-beat steps where at least one sounds",
    "notes_per_bar": "notes (pitched and drums) starting in the bar",
    "empty_beat_rate": "share of the bar's beats in which no note (pitched or drum) sounds",
    "groove_consistency": "1 − Hamming distance between this bar's and the previous bar's onset grids "
                          "(1/8-beat steps), over the grid length",
    "drum_share": "share of the notes starting in the bar that are drum hits",
}

TokenTable = RemiTable  # the shared table, by the name training code uses


@dataclass(frozen=True)
class ParsedNotes:
    """Notes of a token stream on one beat axis. Note arrays have one entry per note, in token order."""

    onset_beats: np.ndarray  # (N,) float, from the start of the first bar
    duration_beats: np.ndarray  # (N,) float
    pitch: np.ndarray  # (N,) int, MIDI pitch (drum notes: the drum key)
    program: np.ndarray  # (N,) int, -1 = drums
    velocity: np.ndarray  # (N,) int
    bar: np.ndarray  # (N,) int, the bar the note starts in
    bar_start_beats: np.ndarray  # (B+1,) float, bar b spans [bar_start_beats[b], bar_start_beats[b+1])
    beats_per_bar: np.ndarray  # (B,) int, time-signature numerator in force
    tempo_bpm: np.ndarray  # (B,) float, last tempo at or before the bar (NaN before any)
    time_sig: tuple  # (B,) of (numerator, denominator)
    note_tokens: np.ndarray  # (B,) int, Pitch/PitchDrum tokens in the bar (decoded notes ≤ this)

    @property
    def n_bars(self) -> int:
        return len(self.beats_per_bar)

    @property
    def is_drum(self) -> np.ndarray:
        return self.program < 0


def parse_notes(table: RemiTable, ids: Sequence[int]) -> ParsedNotes:
    """Notes and bar grid of `ids` (tokens before the first Bar, and condition tokens, are ignored)."""
    kinds, values, time_signature = table.kinds, table.values, table.time_signature
    steps = table.positions_per_beat  # Position and Duration values count these steps of a beat
    onset, dur, pitch, prog, vel, bar_of = [], [], [], [], [], []
    bar_starts: list[float] = []
    beats_per_bar: list[int] = []
    tempos: list[float] = []
    sigs: list[tuple[int, int]] = []
    note_tokens: list[int] = []
    bar = -1
    start = 0.0
    num, den = 4, 4
    tempo = math.nan
    pos = 0.0
    program = 0
    p_pitch = p_vel = None  # the note being read
    p_drum = False
    for t in ids:
        k = kinds[t]
        if k == BAR:
            if bar >= 0:
                start += beats_per_bar[bar]
            bar += 1
            bar_starts.append(start)
            beats_per_bar.append(num)
            sigs.append((num, den))
            tempos.append(tempo)
            note_tokens.append(0)
            pos, p_pitch = 0.0, None
        elif bar < 0 or k == GENRE or k == MOOD:
            continue
        elif k == TIME_SIG:
            num, den = time_signature[t]
            beats_per_bar[bar], sigs[bar] = num, (num, den)
            p_pitch = None
        elif k == POSITION:
            pos, p_pitch = values[t] / steps, None
        elif k == PROGRAM:
            program, p_pitch = int(values[t]), None
        elif k == PITCH or k == PITCH_DRUM:
            p_pitch, p_vel, p_drum = int(values[t]), None, (k == PITCH_DRUM or program < 0)
            note_tokens[bar] += 1
        elif k == VELOCITY:
            if p_pitch is not None and p_vel is None:
                p_vel = int(values[t])
            else:
                p_pitch = None
        elif k == DURATION:
            if p_pitch is not None and p_vel is not None:
                onset.append(start + pos)
                dur.append(values[t] / steps)
                pitch.append(p_pitch)
                prog.append(-1 if p_drum else program)
                vel.append(p_vel)
                bar_of.append(bar)
            p_pitch = None
        elif k == TEMPO:
            tempo = values[t]
            tempos[bar] = tempo
            p_pitch = None
        else:
            p_pitch = None
    if bar >= 0:
        bar_starts.append(start + beats_per_bar[bar])
    return ParsedNotes(
        onset_beats=np.asarray(onset, dtype=np.float64), duration_beats=np.asarray(dur, dtype=np.float64),
        pitch=np.asarray(pitch, dtype=np.int64), program=np.asarray(prog, dtype=np.int64),
        velocity=np.asarray(vel, dtype=np.int64), bar=np.asarray(bar_of, dtype=np.int64),
        bar_start_beats=np.asarray(bar_starts, dtype=np.float64),
        beats_per_bar=np.asarray(beats_per_bar, dtype=np.int64), tempo_bpm=np.asarray(tempos, dtype=np.float64),
        time_sig=tuple(sigs), note_tokens=np.asarray(note_tokens, dtype=np.int64))


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def _sounding_steps(onsets: np.ndarray, ends: np.ndarray, bar_start: float, n_steps: int) -> np.ndarray:
    """(n_steps,) count of notes sounding at the midpoint of each 1/8-beat step of the bar."""
    mids = bar_start + (np.arange(n_steps) + 0.5) / STEPS_PER_BEAT
    if onsets.size == 0:
        return np.zeros(n_steps, dtype=np.int64)
    return ((onsets[:, None] <= mids[None, :]) & (ends[:, None] > mids[None, :])).sum(axis=0)


def bar_stats(parsed: ParsedNotes) -> dict[str, np.ndarray]:
    """Per-bar values (B,) for each name in STAT_NAMES; NaN where the bar has nothing to measure
    (no pitched notes for entropy/polyphony, no notes for drum share, first bar or a changed bar
    length for groove consistency)."""
    n_bars = parsed.n_bars
    out = {name: np.full(n_bars, math.nan) for name in STAT_NAMES}
    if n_bars == 0:
        return out
    onsets, ends = parsed.onset_beats, parsed.onset_beats + parsed.duration_beats
    drum = parsed.is_drum
    order = np.argsort(onsets, kind="stable")
    sorted_onsets = onsets[order]
    max_dur = float(parsed.duration_beats.max()) if onsets.size else 0.0
    prev_grid: np.ndarray | None = None
    for b in range(n_bars):
        lo, hi = parsed.bar_start_beats[b], parsed.bar_start_beats[b + 1]
        n_beats = int(parsed.beats_per_bar[b])
        n_steps = n_beats * STEPS_PER_BEAT
        starting = parsed.bar == b
        # notes sounding in the bar: started before its end and not finished by its start
        i0, i1 = np.searchsorted(sorted_onsets, [lo - max_dur, hi], side="left")
        cand = order[i0:i1]
        cand = cand[ends[cand] > lo]
        n_start = int(starting.sum())
        out["notes_per_bar"][b] = n_start
        if n_start:
            out["drum_share"][b] = float(drum[starting].sum()) / n_start
        pitched_start = starting & ~drum
        out["pitch_class_entropy"][b] = _entropy(np.bincount(parsed.pitch[pitched_start] % 12, minlength=12))
        pitched = cand[~drum[cand]]
        sounding = _sounding_steps(onsets[pitched], ends[pitched], lo, n_steps)
        if (sounding > 0).any():
            out["polyphony"][b] = float(sounding[sounding > 0].mean())
        any_sounding = _sounding_steps(onsets[cand], ends[cand], lo, n_steps)
        per_beat = any_sounding.reshape(n_beats, STEPS_PER_BEAT).max(axis=1) if n_beats else any_sounding
        out["empty_beat_rate"][b] = float((per_beat == 0).mean()) if n_beats else math.nan
        grid = np.zeros(n_steps, dtype=bool)
        steps = np.round((onsets[starting] - lo) * STEPS_PER_BEAT).astype(np.int64)
        grid[steps[(steps >= 0) & (steps < n_steps)]] = True
        if prev_grid is not None and prev_grid.size == grid.size and grid.size:
            out["groove_consistency"][b] = 1.0 - float((prev_grid != grid).mean())
        prev_grid = grid
    return out


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """1-D Wasserstein-1 distance between two empirical distributions: ∫ |F_u(x) − F_v(x)| dx."""
    u, v = np.sort(np.asarray(u, dtype=np.float64)), np.sort(np.asarray(v, dtype=np.float64))
    if u.size == 0 or v.size == 0:
        raise ValueError("Wasserstein distance needs two non-empty samples")
    xs = np.sort(np.concatenate([u, v]))
    widths = np.diff(xs)
    cdf_u = np.searchsorted(u, xs[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, xs[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def stat_distances(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per statistic: real and generated mean, and W1(generated, real) / std(real) ('distance').
    The distance is None where either side has no defined bars."""
    result = {}
    for name in STAT_NAMES:
        r, g = real.get(name, np.zeros(0)), generated.get(name, np.zeros(0))
        entry = {"real_mean": float(r.mean()) if r.size else None,
                 "generated_mean": float(g.mean()) if g.size else None,
                 "real_bars": int(r.size), "generated_bars": int(g.size), "distance": None}
        if r.size and g.size:
            scale = float(r.std())
            if scale <= 1e-9:  # a constant real distribution: fall back to the raw distance
                scale = 1.0
            entry["distance"] = wasserstein_1d(g, r) / scale
        result[name] = entry
    return result


# General MIDI's 16 instrument families (8 programs each), then drums
FAMILY_NAMES = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass", "reed",
                "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects", "drums")


def family_counts(parsed: ParsedNotes, bars: slice = slice(None)) -> np.ndarray:
    """(17,) notes per instrument family (`FAMILY_NAMES`) among the notes starting in `bars`."""
    chosen = np.zeros(parsed.n_bars, dtype=bool)
    chosen[bars] = True
    program = parsed.program[chosen[parsed.bar]] if parsed.bar.size else parsed.program
    family = np.where(program < 0, len(FAMILY_NAMES) - 1, program // 8)
    return np.bincount(family, minlength=len(FAMILY_NAMES)).astype(np.float64)


def total_variation(p: np.ndarray, q: np.ndarray) -> float | None:
    """Half the L1 distance between two count vectors as distributions (0 = same mix, 1 = disjoint)."""
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
