"""Genre/mood classifier over token windows: the judge that `moodstream evaluate` uses.

Features come from token ids only (condition tokens stripped): token unigrams, hashed token bigrams,
program histogram, a key-invariant pitch-class profile with Krumhansl–Kessler key correlations, onset
positions within the beat, density/pitch/velocity/tempo scalars and the per-bar statistics of
`training.musicstats`. A small MLP with a genre head and a mood head reads them. It is trained on the
training split of real data only (never on model output), on windows of 1–8 bars, so it judges single
bars and multi-bar windows. Saved as a directory: `model.safetensors`, `model.json`, `tokenizer.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from model.errors import MoodstreamError
from model.remi import BAR, GENRE, MOOD, RemiTable
from training.musicstats import STEPS_PER_BEAT, bar_stats, parse_notes
from training.pieces import LabelledPiece, load_dataset_pieces, load_manifest_pieces

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
KIND = "moodstream-genre-mood-classifier"

# Krumhansl & Kessler (1982) probe-tone key profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TIME_SIGS = ((3, 8), (6, 8), (12, 8), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4))
N_SCALARS = 20

# ---- features -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """Which features, for which vocabulary; saved with the classifier."""

    vocab_size: int
    hash_buckets: int = 64  # hashed token-bigram counts

    def __post_init__(self):
        if self.vocab_size <= 0 or self.hash_buckets <= 0:
            raise MoodstreamError(f"feature spec: bad sizes vocab_size={self.vocab_size}, "
                                  f"hash_buckets={self.hash_buckets}")

    @property
    def n_features(self) -> int:
        # unigram, bigram, programs (128 + drums), key-relative profile + 3 key scores, onset-in-beat,
        # time signatures, scalars
        return self.vocab_size + self.hash_buckets + 129 + 15 + STEPS_PER_BEAT + len(TIME_SIGS) + N_SCALARS


@dataclass(frozen=True)
class PieceView:
    """A token stream prepared once so that any bar window's features are cheap."""

    ids: np.ndarray  # (T,) token ids, conditions stripped, from the first Bar on
    bar_token_start: np.ndarray  # (B+1,) token index where each bar starts; last = T
    note_start: np.ndarray  # (B+1,) index of the first note of each bar
    parsed: object  # musicstats.ParsedNotes
    stats: dict  # per-bar musicstats.bar_stats

    @property
    def n_bars(self) -> int:
        return len(self.bar_token_start) - 1

    def bar_has_notes(self, b0: int, b1: int) -> bool:
        return bool(self.note_start[b1] > self.note_start[b0])


_KEY_PROFILES = np.stack([np.roll(KK_MAJOR, k) for k in range(12)] + [np.roll(KK_MINOR, k) for k in range(12)])
_KEY_PROFILES = (_KEY_PROFILES - _KEY_PROFILES.mean(1, keepdims=True)) / _KEY_PROFILES.std(1, keepdims=True)


def key_profile_features(pc_weights: np.ndarray) -> np.ndarray:
    """(15,): the pitch-class profile rotated so the best Krumhansl–Kessler key's tonic is first, then the
    best major correlation, the best minor correlation and their difference. Zeros for no notes."""
    total = pc_weights.sum()
    if total <= 0:
        return np.zeros(15)
    profile = pc_weights / total
    std = profile.std()
    if std <= 1e-12:  # all twelve pitch classes equally: no key
        return np.concatenate([profile, [0.0, 0.0, 0.0]])
    r = _KEY_PROFILES @ ((profile - profile.mean()) / std) / 12  # (24,) Pearson correlations
    best = int(np.argmax(r))
    rotated = np.roll(profile, -(best % 12))
    major, minor = float(r[:12].max()), float(r[12:].max())
    return np.concatenate([rotated, [major, minor, major - minor]])


class Featurizer:
    """Token windows → fixed-length feature vectors (FeatureSpec.n_features,), float32."""

    def __init__(self, table: RemiTable, spec: FeatureSpec):
        if len(table) != spec.vocab_size:
            raise MoodstreamError(f"classifier was built for {spec.vocab_size} tokens, the vocabulary has "
                                  f"{len(table)}; retrain it for this model (--train-classifier)")
        self.table, self.spec = table, spec
        self._ts_index = {ts: i for i, ts in enumerate(TIME_SIGS)}

    def prepare(self, ids: Sequence[int]) -> PieceView:
        arr = np.asarray(ids, dtype=np.int64)
        kinds = self.table.kind[arr]
        arr = arr[(kinds != GENRE) & (kinds != MOOD)]
        bar_pos = np.flatnonzero(self.table.kind[arr] == BAR)
        if bar_pos.size:
            arr = arr[bar_pos[0]:]
            bar_pos = bar_pos - bar_pos[0]
        else:
            arr = arr[:0]
        parsed = parse_notes(self.table, arr)
        bar_token_start = np.append(bar_pos, arr.size)
        note_start = np.searchsorted(parsed.bar, np.arange(len(bar_pos) + 1), side="left")
        return PieceView(ids=arr, bar_token_start=bar_token_start, note_start=note_start, parsed=parsed,
                         stats=bar_stats(parsed))

    def window(self, view: PieceView, b0: int, b1: int) -> np.ndarray:
        """Features of bars [b0, b1) of a prepared stream."""
        if not 0 <= b0 < b1 <= view.n_bars:
            raise IndexError(f"bar window [{b0}, {b1}) outside 0..{view.n_bars}")
        V, H = self.spec.vocab_size, self.spec.hash_buckets
        toks = view.ids[view.bar_token_start[b0]:view.bar_token_start[b1]]
        n_tok = max(1, toks.size)
        unigram = np.bincount(toks, minlength=V)[:V] / n_tok
        pairs = (toks[:-1] * V + toks[1:]) * 2654435761 % H
        bigram = np.bincount(pairs, minlength=H)[:H] / max(1, toks.size - 1)

        p = view.parsed
        sel = slice(int(view.note_start[b0]), int(view.note_start[b1]))
        program, pitch, vel = p.program[sel], p.pitch[sel], p.velocity[sel]
        onset, dur = p.onset_beats[sel], p.duration_beats[sel]
        n_notes = program.size
        drum = program < 0
        programs = np.bincount(np.where(drum, 128, program), minlength=129)[:129] / max(1, n_notes)
        pitched = ~drum
        pc = np.bincount(pitch[pitched] % 12, weights=np.minimum(dur[pitched], 4.0), minlength=12)[:12]
        key = key_profile_features(pc)
        in_beat = np.round((onset - np.floor(onset)) * STEPS_PER_BEAT).astype(np.int64) % STEPS_PER_BEAT
        onset_hist = np.bincount(in_beat, minlength=STEPS_PER_BEAT)[:STEPS_PER_BEAT] / max(1, n_notes)
        ts = np.zeros(len(TIME_SIGS))
        for sig in p.time_sig[b0:b1]:
            if sig in self._ts_index:
                ts[self._ts_index[sig]] += 1.0 / (b1 - b0)

        beats = float(p.beats_per_bar[b0:b1].sum()) or 1.0
        n_pitched, n_drum = int(pitched.sum()), int(drum.sum())
        pp, pv, pd = pitch[pitched], vel, dur[pitched]
        tempo = p.tempo_bpm[b0]

        def mean(name: str, scale: float = 1.0) -> float:
            values = view.stats[name][b0:b1]
            values = values[~np.isnan(values)]
            return float(values.mean()) / scale if values.size else 0.0

        scalars = np.array([
            math.log1p(n_notes / beats), math.log1p(n_pitched / beats), math.log1p(n_drum / beats),
            n_drum / n_notes if n_notes else 0.0,
            pp.mean() / 128 if n_pitched else 0.0, pp.std() / 128 if n_pitched else 0.0,
            (pp.max() - pp.min()) / 88 if n_pitched else 0.0,
            np.log2(pd).mean() / 4 if n_pitched else 0.0,
            pv.mean() / 127 if n_notes else 0.0, pv.std() / 127 if n_notes else 0.0,
            math.log(tempo / 120) if not math.isnan(tempo) else 0.0, 0.0 if math.isnan(tempo) else 1.0,
            mean("polyphony", 8.0), mean("empty_beat_rate"), mean("pitch_class_entropy", math.log(12)),
            mean("groove_consistency"), beats / (b1 - b0) / 12, math.log(b1 - b0),
            float(n_notes == 0), toks.size / beats / 100,
        ])
        return np.concatenate([unigram, bigram, programs, key, onset_hist, ts, scalars]).astype(np.float32)


def sample_windows(view: PieceView, lengths: Sequence[int], per_length: int, rng: np.random.Generator
                   ) -> list[tuple[int, int]]:
    """Up to `per_length` random windows of each length (bars), skipping windows without notes."""
    windows = []
    for length in lengths:
        n_starts = view.n_bars - length + 1
        if n_starts <= 0:
            continue
        starts = rng.choice(n_starts, size=min(per_length, n_starts), replace=False)
        windows += [(int(s), int(s) + length) for s in sorted(starts) if view.bar_has_notes(int(s), int(s) + length)]
    return windows


def tiled_windows(view: PieceView, length: int, max_windows: int) -> list[tuple[int, int]]:
    """Non-overlapping windows of `length` bars with notes, at most `max_windows`, evenly spread."""
    windows = [(s, s + length) for s in range(0, view.n_bars - length + 1, length) if view.bar_has_notes(s, s + length)]
    if len(windows) > max_windows > 0:
        keep = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[i] for i in keep]
    return windows


# ---- model ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierConfig:
    hidden: int = 256  # MLP width
    dropout: float = 0.5
    epochs: int = 15  # 15 vs 30: same validation accuracy on the corpus, half the time
    batch_size: int = 256  # windows per step
    lr: float = 2e-3  # AdamW peak, cosine-decayed to lr/20
    weight_decay: float = 0.1
    window_bars: tuple[int, ...] = (1, 2, 4, 8)  # window lengths it learns to judge
    windows_per_length: int = 4  # per piece and length, per training set build: at least this many …
    bars_per_window: int = 8  # … or one per this many bars of the piece (long band songs give more) …
    max_windows_per_length: int = 32  # … but at most this many
    feature_noise: float = 0.3  # training only: Gaussian noise on the standardised features (× their std)
    group_window_cap: int = 20  # a group's (artist's, song's) windows weigh at most this many windows in all
    #                             (0 = off), so that prolific artists do not define their genre
    hash_buckets: int = 64
    class_balance: float = 1.0  # loss weight ∝ count^-class_balance (0 = none, 1 = fully balanced)
    seed: int = 0

    def __post_init__(self):
        checks = {"hidden": self.hidden > 0, "dropout": 0 <= self.dropout < 1, "epochs": self.epochs > 0,
                  "batch_size": self.batch_size > 0, "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
                  "window_bars": bool(self.window_bars) and all(b > 0 for b in self.window_bars),
                  "windows_per_length": self.windows_per_length > 0, "bars_per_window": self.bars_per_window > 0,
                  "max_windows_per_length": self.max_windows_per_length >= self.windows_per_length,
                  "feature_noise": self.feature_noise >= 0, "group_window_cap": self.group_window_cap >= 0,
                  "hash_buckets": self.hash_buckets > 0,
                  "class_balance": 0 <= self.class_balance <= 1}
        for name, ok in checks.items():
            if not ok:
                raise MoodstreamError(f"classifier config: bad {name} = {getattr(self, name)!r}")


def _build_net(n_features: int, hidden: int, dropout: float, n_genres: int, n_moods: int):
    import torch
    from torch import nn

    class GenreMoodMLP(nn.Module):
        """Standardise → two hidden layers → a genre head and a mood head (logits)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("feature_mean", torch.zeros(n_features))
            self.register_buffer("feature_std", torch.ones(n_features))
            self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
            self.genre_head = nn.Linear(hidden, n_genres)
            self.mood_head = nn.Linear(hidden, n_moods)

        def forward(self, x):  # x (B, F) → (B, n_genres), (B, n_moods)
            h = self.body((x - self.feature_mean) / self.feature_std)
            return self.genre_head(h), self.mood_head(h)

    return GenreMoodMLP()


class GenreMoodClassifier:
    """A trained classifier: `classify(view, windows)` → predicted (genre, mood) names per window."""

    def __init__(self, net, featurizer: Featurizer, genres: Sequence[str], moods: Sequence[str], meta: dict):
        self.net, self.featurizer = net.eval(), featurizer
        self.genres, self.moods = tuple(genres), tuple(moods)
        self.meta = meta

    def prepare(self, ids: Sequence[int]) -> PieceView:
        return self.featurizer.prepare(ids)

    def probabilities(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, n_genres), (N, n_moods) class probabilities for a feature matrix (N, F)."""
        import torch

        if len(features) == 0:
            return np.zeros((0, len(self.genres))), np.zeros((0, len(self.moods)))
        with torch.no_grad():
            g, m = self.net(torch.as_tensor(np.asarray(features, dtype=np.float32)))
        return g.softmax(-1).numpy(), m.softmax(-1).numpy()

    def classify(self, view: PieceView, windows: Sequence[tuple[int, int]]) -> list[tuple[str, str]]:
        if not windows:
            return []
        feats = np.stack([self.featurizer.window(view, b0, b1) for b0, b1 in windows])
        pg, pm = self.probabilities(feats)
        return [(self.genres[i], self.moods[j]) for i, j in zip(pg.argmax(1), pm.argmax(1))]

    def classify_ids(self, ids: Sequence[int]) -> tuple[str, str]:
        """(genre, mood) of a whole token stream taken as one window."""
        view = self.prepare(ids)
        if view.n_bars == 0:
            raise ValueError("no bars to classify")
        return self.classify(view, [(0, view.n_bars)])[0]

    def save(self, out_dir: str | Path, vocab) -> None:
        """Write model.safetensors, model.json and tokenizer.json into `out_dir` (each via a temp name)."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / (WEIGHTS_FILE + ".tmp")
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        tmp.replace(out_dir / WEIGHTS_FILE)
        meta = {**self.meta, "kind": KIND, "genres": list(self.genres), "moods": list(self.moods),
                "feature_spec": asdict(self.featurizer.spec), "vocab_sha1": vocab_sha1(vocab)}
        tmp = out_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(out_dir / CONFIG_FILE)
        vocab.save(out_dir / TOKENIZER_FILE)


def vocab_sha1(vocab) -> str:
    return hashlib.sha1("\n".join(vocab.fingerprint()).encode()).hexdigest()


def load_classifier(path: str | Path, vocab=None) -> GenreMoodClassifier:
    """Load a classifier directory; with `vocab`, check that it was trained on the same token ids."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise MoodstreamError(f"{path}: no classifier here (needs {WEIGHTS_FILE} and {CONFIG_FILE}); "
                              "train one with `moodstream evaluate --train-classifier --data D`")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except ValueError as err:
        raise MoodstreamError(f"{path / CONFIG_FILE}: not valid JSON ({err})") from err
    if meta.get("kind") != KIND:
        raise MoodstreamError(f"{path / CONFIG_FILE}: not a moodstream classifier (kind {meta.get('kind')!r})")
    if vocab is not None and meta.get("vocab_sha1") != vocab_sha1(vocab):
        raise MoodstreamError(f"{path}: classifier was trained for another vocabulary; "
                              "retrain it with `moodstream evaluate --train-classifier`")
    if vocab is None:
        from model.vocab import Vocab

        vocab = Vocab.load(path / TOKENIZER_FILE)
    spec = FeatureSpec(**meta["feature_spec"])
    cfg = meta.get("config", {})
    net = _build_net(spec.n_features, cfg.get("hidden", 256), 0.0, len(meta["genres"]), len(meta["moods"]))
    net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    return GenreMoodClassifier(net, Featurizer(RemiTable(vocab), spec), meta["genres"], meta["moods"],
                               meta)


def windows_per_length(config: ClassifierConfig, n_bars: int) -> int:
    """Training windows of each length to draw from a piece of `n_bars` bars: more from long songs."""
    return int(min(config.max_windows_per_length, max(config.windows_per_length, n_bars // config.bars_per_window)))


def _window_set(featurizer: Featurizer, pieces: Sequence[LabelledPiece], genres, moods, config: ClassifierConfig,
                rng, progress: bool, desc: str):
    """Features (N, F), genre targets, mood targets (-1 = unlabelled), mood-origin flags (1 = human) and
    each window's group (the piece's, or its name when it has none)."""
    from tqdm import tqdm

    g_index, m_index = {g: i for i, g in enumerate(genres)}, {m: i for i, m in enumerate(moods)}
    feats, g_t, m_t, human, groups = [], [], [], [], []
    for piece in tqdm(pieces, desc=desc, unit="piece", disable=not progress, leave=False):
        view = featurizer.prepare(piece.ids)
        for b0, b1 in sample_windows(view, config.window_bars, windows_per_length(config, view.n_bars), rng):
            feats.append(featurizer.window(view, b0, b1))
            g_t.append(g_index.get(piece.genre, -1))
            m_t.append(m_index.get(piece.mood, -1))
            human.append(piece.mood_origin == "human")
            groups.append(piece.group or piece.name)
    if not feats:
        return (np.zeros((0, featurizer.spec.n_features), np.float32), *(np.zeros(0, np.int64),) * 2,
                np.zeros(0, bool), np.zeros(0, str))
    return np.stack(feats), np.asarray(g_t), np.asarray(m_t), np.asarray(human), np.asarray(groups)


def group_weights(groups: np.ndarray, cap: int) -> np.ndarray:
    """Per window: 1, or cap ÷ its group's window count where a group has more than `cap` windows (0 = all 1);
    scaled to mean 1."""
    if cap <= 0 or groups.size == 0:
        return np.ones(groups.size)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = np.minimum(1.0, cap / counts[inverse])
    return w / w.mean()


def _accuracy(pred: np.ndarray, target: np.ndarray) -> float | None:
    keep = target >= 0
    return float((pred[keep] == target[keep]).mean()) if keep.any() else None


def train_classifier_on_pieces(vocab, train_pieces: Sequence[LabelledPiece],
                               val_pieces: Sequence[LabelledPiece] = (), config: ClassifierConfig = ClassifierConfig(),
                               progress: bool = True) -> GenreMoodClassifier:
    """Fit a classifier on windows of `train_pieces` (labels in vocab's genres/moods, `any` = unlabelled);
    `val_pieces` only feed the accuracy figures in its summary."""
    import torch
    from tqdm import tqdm

    start = time.monotonic()
    # only the classes the training split has (a genre with no data could never be recognised)
    genres = [g for g in vocab.genres if g != "any" and any(p.genre == g for p in train_pieces)]
    moods = [m for m in vocab.moods if m != "any" and any(p.mood == m for p in train_pieces)]
    if not genres or not moods:
        raise MoodstreamError("the classifier's training split needs pieces with genre and mood labels "
                              f"(found genres {genres or 'none'}, moods {moods or 'none'})")
    featurizer = Featurizer(RemiTable(vocab), FeatureSpec(vocab.vocab_size, config.hash_buckets))
    rng = np.random.default_rng(config.seed)
    x, yg, ym, _, groups = _window_set(featurizer, train_pieces, genres, moods, config, rng, progress,
                                       "classifier features (train)")
    if len(x) == 0:
        raise MoodstreamError("no training windows with notes for the classifier")
    torch.manual_seed(config.seed)
    net = _build_net(x.shape[1], config.hidden, config.dropout, len(genres), len(moods))
    xt = torch.as_tensor(x)
    net.feature_mean.copy_(xt.mean(0))
    net.feature_std.copy_(xt.std(0).clamp_min(1e-3))

    def class_weights(y: np.ndarray, n: int) -> torch.Tensor:
        counts = np.bincount(y[y >= 0], minlength=n).astype(np.float64)
        w = np.where(counts > 0, np.maximum(counts, 1.0) ** -config.class_balance, 0.0)
        w = w / (w * counts).sum() * counts.sum() if counts.sum() else np.ones(n)
        return torch.as_tensor(w, dtype=torch.float32)

    def weighted_loss(y: np.ndarray, n: int):
        """Cross-entropy with class weights × the windows' group weights, a weighted mean over a batch."""
        cw = class_weights(y, n)
        ce = torch.nn.CrossEntropyLoss(weight=cw, ignore_index=-1, reduction="none")

        def loss(logits, target, w):
            norm = (cw[target.clamp_min(0)] * (target >= 0) * w).sum()
            return (ce(logits, target) * w).sum() / norm.clamp_min(1e-9)
        return loss

    loss_g, loss_m = weighted_loss(yg, len(genres)), weighted_loss(ym, len(moods))
    ygt, ymt = torch.as_tensor(yg), torch.as_tensor(ym)
    wt = torch.as_tensor(group_weights(groups, config.group_window_cap), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.1,
                                                final_div_factor=20)
    gen = torch.Generator().manual_seed(config.seed)
    net.train()
    bar = tqdm(total=total, desc="train classifier", unit="step", disable=not progress, leave=False)
    for _ in range(config.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), config.batch_size):
            idx = perm[i:i + config.batch_size]
            batch = xt[idx]
            if config.feature_noise:
                batch = batch + config.feature_noise * net.feature_std * torch.randn(batch.shape, generator=gen)
            g_logits, m_logits = net(batch)
            loss = torch.zeros(())
            if (ygt[idx] >= 0).any():
                loss = loss + loss_g(g_logits, ygt[idx], wt[idx])
            if (ymt[idx] >= 0).any():
                loss = loss + loss_m(m_logits, ymt[idx], wt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    net.eval()

    clf = GenreMoodClassifier(net, featurizer, genres, moods, {})
    pg, pm = clf.probabilities(x)
    summary = {"train_windows": int(len(x)), "train_pieces": len(train_pieces),
               "train_genre_acc": _accuracy(pg.argmax(1), yg), "train_mood_acc": _accuracy(pm.argmax(1), ym),
               "genre_window_counts": {g: int((yg == i).sum()) for i, g in enumerate(genres)},
               "mood_window_counts": {m: int((ym == i).sum()) for i, m in enumerate(moods)}}
    if val_pieces:
        vx, vg, vm, vh, _ = _window_set(featurizer, val_pieces, genres, moods, config,
                                        np.random.default_rng(config.seed + 1), progress,
                                        "classifier features (validation)")
        pg, pm = clf.probabilities(vx)
        summary.update({"val_windows": int(len(vx)), "val_pieces": len(val_pieces),
                        "val_genre_acc": _accuracy(pg.argmax(1), vg),
                        "val_mood_acc_human": _accuracy(pm.argmax(1)[vh], vm[vh]),
                        "val_mood_acc_derived": _accuracy(pm.argmax(1)[~vh], vm[~vh])})
        summary.update(genre_recall(clf, val_pieces))
    summary["train_seconds"] = round(time.monotonic() - start, 1)
    clf.meta = {"config": asdict(config), "summary": summary}
    log.info("classifier trained: %s", summary)
    return clf


def genre_recall(clf: GenreMoodClassifier, pieces: Sequence[LabelledPiece], window_bars: int = 4,
                 max_windows: int = 8) -> dict:
    """Genre recall per genre on tiled `window_bars` windows (at most `max_windows` per piece, as evaluate
    judges real music), for real pieces and for generated arrangements (source mma) apart, and the real
    class-balanced accuracy (mean recall over the genres that occur)."""
    hits: dict = {"real": {}, "generated": {}}
    for piece in pieces:
        if piece.genre not in clf.genres:
            continue
        view = clf.prepare(piece.ids)
        kind = "generated" if piece.source == "mma" else "real"
        for genre, _ in clf.classify(view, tiled_windows(view, window_bars, max_windows)):
            counts = hits[kind].setdefault(piece.genre, [0, 0])
            counts[0] += genre == piece.genre
            counts[1] += 1
    recall = {kind: {g: round(h / n, 4) for g, (h, n) in sorted(table.items())} for kind, table in hits.items()}
    real = list(recall["real"].values())
    return {f"val_real_{window_bars}bar_genre_acc_balanced": round(float(np.mean(real)), 4) if real else None,
            f"val_real_{window_bars}bar_genre_recall": recall["real"],
            f"val_generated_{window_bars}bar_genre_recall": recall["generated"],
            f"val_{window_bars}bar_windows": {kind: {g: n for g, (_, n) in sorted(t.items())}
                                              for kind, t in hits.items()}}


def train_classifier(data: str | Path, out_dir: str | Path, config: ClassifierConfig = ClassifierConfig(),
                     vocab=None, progress: bool = True) -> dict:
    """Train on the training split of `data` (a built dataset directory, or a manifest.csv with its
    train rows), report on its validation split, save to `out_dir`; returns the training summary.
    `vocab` defaults to the dataset's tokenizer.json; pass the model's when training on a manifest."""
    data = Path(data)
    if data.is_dir():
        if vocab is None:
            from model.vocab import Vocab

            vocab = Vocab.load(data / "tokenizer.json")
        train, val = load_dataset_pieces(data, "train"), load_dataset_pieces(data, "validation")
    else:
        if vocab is None:
            from model.vocab import Vocab

            vocab = Vocab.create()
        train = load_manifest_pieces(data, vocab, "train", progress)
        val = load_manifest_pieces(data, vocab, "validation", progress)
    clf = train_classifier_on_pieces(vocab, train, val, config, progress)
    clf.meta["summary"]["data"] = str(data)
    clf.save(out_dir, vocab)
    return clf.meta["summary"]
