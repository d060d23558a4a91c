"""`moodstream evaluate`: how good a model is, in figures (issue 5).

`evaluate(model_dir, data, out_dir, config)` scores the model and a trigram baseline on the same real
tokens, judges real and generated music with the genre/mood classifier (training/classifier.py),
generates K bars for every genre × mood pair with grammar-constrained, guided sampling, switches the
conditions and checks that the music follows, and compares musical statistics of generated and real bars
(training/musicstats.py). It writes report.json, report.md and PNG plots into `out_dir` (each file under
a temporary name first) and returns the report dict. Seeds are fixed: the same inputs give the same
figures.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STATS_PNG = "music_stats.png"
CONFUSION_PNG = "confusion.png"
ADHERENCE_PNG = "adherence.png"
SEAM_PNG = "switch_seam.png"
INSTRUMENT_FAMILY = "instrument_family"  # music_stat_distance's key for the instrument-family mix distance
STREAMER = "default"  # an EvalConfig generator option's value meaning "the streamer's default"
GENERATOR_OPTIONS = ("switch_context_bars", "switch_negative", "switch_guidance_w", "switch_boost_bars",
                     "context_tokens")
RATE_KEYS = ("classifier_genre_acc_real", "classifier_mood_acc_real", "classifier_mood_acc_real_derived",
             "generated_genre_acc", "generated_mood_acc", "syntax_valid_bar_rate", "switch_success_rate")


def streamer_defaults() -> dict:
    """The live instrument's defaults (guidance weight, temperature, top-k, top-p, bar token caps, switch
    policy), so that evaluate judges the music users hear unless told otherwise."""
    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig

    controls = Controls()
    config = GeneratorConfig()
    return {"guidance_w": controls.guidance_w, "temperature": controls.temperature, "top_k": controls.top_k,
            "top_p": controls.top_p, "max_tokens_per_bar": config.max_bar_tokens,
            "max_tokens_per_beat": config.max_tokens_per_beat,
            **{name: getattr(config, name) for name in GENERATOR_OPTIONS}}


@dataclass(frozen=True)
class EvalConfig:
    bars_per_pair: int = 4  # K: bars every stream plays before its first switch (judged for *_acc)
    switches_per_stream: int = 9  # one-axis switches per stream, ADHERENCE_BARS bars apart (≈160 per axis)
    streams_per_pair: int = 1  # streams per genre × mood pair (each with its own seed)
    ceiling_splices: int = 600  # real splices per axis for the ceiling
    guidance_w: float | None = None  # None = the streamer's default (streamer.controls.Controls)
    temperature: float | None = None  # None = the streamer's default (likewise top_k, top_p)
    top_k: int | None = None
    top_p: float | None = None
    max_tokens_per_bar: int | None = None  # a bar ends at its next note boundary after this many tokens
    #                                        (None = the streamer's; at most half the model's context)
    max_tokens_per_beat: float | None = None  # … or after this many per beat of its time signature (None =
    #                                           the streamer's)
    # the switch policy and the stream's context (GeneratorConfig's fields of the same names); STREAMER = the
    # streamer's default
    switch_context_bars: int | None | str = "default"  # old bars kept after a switch (None: all that fit)
    switch_negative: str = "default"  # the guidance row after a switch: "any" or "old"
    switch_guidance_w: float | None | str = "default"  # guidance weight for the first bars of a switch (None: off)
    switch_boost_bars: int | str = "default"  # … for this many bars
    context_tokens: int | None | str = "default"  # the model's context in the stream (None: its block_size)
    lookahead_bars: int = 1  # bars the generator writes ahead; a switch throws them away, as in play
    window_bars: int = 4  # window the classifier judges for the *_acc figures (real and generated alike)
    max_windows_per_piece: int = 8  # real windows per piece (evenly spread), so long songs do not dominate
    nll_tokens_per_piece: int = 1024  # first tokens of each real piece that the NLL figures score
    stats_bars_per_piece: int = 32  # first bars of each real piece in the real statistics
    ngram_from: str | None = None  # a built dataset whose training split the trigram is fitted on
    seed: int = 0
    device: str | None = None  # None = CUDA if present, else CPU

    def __post_init__(self):
        checks = {"bars_per_pair": self.bars_per_pair >= 1, "switches_per_stream": self.switches_per_stream >= 0,
                  "streams_per_pair": self.streams_per_pair >= 1, "ceiling_splices": self.ceiling_splices >= 0,
                  "lookahead_bars": self.lookahead_bars >= 1,
                  "window_bars": self.window_bars >= 1, "max_windows_per_piece": self.max_windows_per_piece >= 1,
                  "nll_tokens_per_piece": self.nll_tokens_per_piece >= 3,
                  "stats_bars_per_piece": self.stats_bars_per_piece >= 1,
                  "max_tokens_per_bar": self.max_tokens_per_bar is None or self.max_tokens_per_bar >= 16,
                  "max_tokens_per_beat": self.max_tokens_per_beat is None or self.max_tokens_per_beat >= 4,
                  "switch_context_bars": self.switch_context_bars in (None, STREAMER) or (
                      isinstance(self.switch_context_bars, int) and self.switch_context_bars >= 0),
                  "switch_negative": self.switch_negative in ("any", "old", STREAMER),
                  "switch_guidance_w": self.switch_guidance_w in (None, STREAMER) or (
                      isinstance(self.switch_guidance_w, (int, float)) and 0 <= self.switch_guidance_w <= 10),
                  "context_tokens": self.context_tokens in (None, STREAMER) or (
                      isinstance(self.context_tokens, int) and self.context_tokens >= 64),
                  "switch_boost_bars": self.switch_boost_bars == STREAMER or (
                      isinstance(self.switch_boost_bars, int) and self.switch_boost_bars >= 1),
                  "guidance_w": self.guidance_w is None or self.guidance_w >= 0}
        for name, ok in checks.items():
            if not ok:
                raise MoodstreamError(f"evaluate: bad {name} = {getattr(self, name)!r}")

    def sampling(self) -> dict:
        """Resolved guidance weight, sampling settings, bar token cap and switch policy."""
        defaults = streamer_defaults()
        resolved = {name: defaults[name] if getattr(self, name) is None else getattr(self, name)
                    for name in ("guidance_w", "temperature", "top_k", "top_p", "max_tokens_per_bar",
                                 "max_tokens_per_beat")}
        for name in GENERATOR_OPTIONS:
            value = getattr(self, name)
            resolved[name] = defaults[name] if value == STREAMER else value
        return resolved


# ---- data ---------------------------------------------------------------------------------------------------
@dataclass
class EvalData:
    kind: str  # "dataset" | "manifest"
    pieces: list  # classifier.LabelledPiece, the ones judged (validation split, or all manifest rows)
    train_pieces: list | None  # for the trigram (and a classifier if the model has none)
    train_source: str  # where train_pieces come from
    notes: list = field(default_factory=list)


def _dataset_matches(dataset_dir: Path, vocab) -> bool:
    from model.checkpoint import vocab_digest
    from model.vocab import Vocab

    if not (dataset_dir / "index.jsonl").is_file() or not (dataset_dir / "tokenizer.json").is_file():
        return False
    return vocab_digest(Vocab.load(dataset_dir / "tokenizer.json")) == vocab_digest(vocab)


def model_dataset(meta: dict) -> Path | None:
    """The built dataset a checkpoint was trained on, if its summary names one that still exists."""
    name = (meta.get("summary") or {}).get("dataset")
    if not name:
        return None
    path = Path(name)
    return path if (path / "index.jsonl").is_file() else None


def load_eval_data(data: Path, vocab, meta: dict, progress: bool) -> EvalData:
    """Pieces to judge from `data` (a built dataset → its validation split; a manifest.csv → its
    validation rows, or all rows without a split column), and training pieces for the baseline."""
    from training.classifier import load_dataset_pieces, load_manifest_pieces, read_manifest

    data = Path(data)
    if data.is_dir():
        if not (data / "index.jsonl").is_file():
            raise MoodstreamError(f"{data}: not a built dataset (no index.jsonl); pass a dataset directory "
                                  "from `moodstream dataset build` or a manifest.csv")
        if not _dataset_matches(data, vocab):
            raise MoodstreamError(f"{data}: dataset tokens do not match the model's vocabulary "
                                  "(tokenizer.json differs); evaluate on the dataset the model was trained on "
                                  "or pass a manifest.csv")
        pieces = load_dataset_pieces(data, "validation")
        if not pieces:
            raise MoodstreamError(f"{data}: the dataset has no validation pieces")
        return EvalData("dataset", pieces, load_dataset_pieces(data, "train"), f"{data} (train split)")
    if data.suffix.lower() != ".csv":
        raise MoodstreamError(f"{data}: not found or not a dataset directory / manifest.csv")
    rows = read_manifest(data)
    has_split = bool(rows) and "split" in rows[0]
    split = "validation" if has_split else None
    pieces = load_manifest_pieces(data, vocab, split, progress)
    notes = [] if has_split else ["the manifest has no split column: every row is judged"]
    if not pieces:
        raise MoodstreamError(f"{data}: no readable {'validation ' if has_split else ''}rows to evaluate on")
    trained_on = model_dataset(meta)
    if trained_on is not None and _dataset_matches(trained_on, vocab):
        train, source = load_dataset_pieces(trained_on, "train"), f"{trained_on} (the model's training dataset)"
    elif has_split and any((r.get("split") or "").strip() == "train" for r in rows):
        train, source = load_manifest_pieces(data, vocab, "train", progress), f"{data} (train rows)"
    else:
        train, source = None, ""
    return EvalData("manifest", pieces, train, source, notes)


# ---- likelihood ------------------------------------------------------------------------------------------------
def scored_positions(vocab, ids: Sequence[int]) -> np.ndarray:
    """Positions whose token both models are scored on: every music token after the first token (condition
    tokens are context only)."""
    ids = np.asarray(ids)
    cond = np.isin(ids, list(vocab.genre_ids.values()) + list(vocab.mood_ids.values()))
    keep = ~cond
    keep[:1] = False
    return np.flatnonzero(keep)


def _condition_block_before(vocab, ids: Sequence[int], end: int) -> list[int]:
    genre = mood = None
    for token_id in ids[:end]:
        if vocab.is_genre(token_id):
            genre = token_id
        elif vocab.is_mood(token_id):
            mood = token_id
    return [t for t in (genre, mood) if t is not None]


def model_token_logprobs(model, vocab, ids: Sequence[int], device, targets: Sequence[int] | None = None
                         ) -> np.ndarray:
    """log P(targets[t] | ids[:t]) for t ≥ 1 (index t−1 of the result; `targets` defaults to `ids`); windows of
    block_size slide by half a block, each opening with the conditioning block in force, so every token sees
    ≥ half a block of past."""
    import torch

    ids = [int(i) for i in ids]
    targets = ids if targets is None else [int(i) for i in targets]
    n, block = len(ids), model.config.block_size
    out = np.zeros(max(0, n - 1))
    a = 1
    stride = max(1, block // 2)
    while a < n:
        b = min(n, a + (block if a == 1 else stride))
        c = max(0, b - 1 - block)
        prefix: list[int] = []
        if c > 0:
            prefix = _condition_block_before(vocab, ids, c)
            c = max(0, b - 1 - (block - len(prefix)))
        window = prefix + ids[c:b - 1]
        with torch.inference_mode():
            logits, _ = model(torch.tensor([window], dtype=torch.long, device=device))
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        rows = torch.arange(a - 1 - c, b - 1 - c) + len(prefix)
        scored = torch.tensor(targets[a:b], device=logp.device)
        out[a - 1:b - 1] = logp[rows.to(logp.device), scored].cpu().numpy()
        a = b
    return out


def bar_conditioned_logprobs(model, vocab, ids: Sequence[int], device) -> np.ndarray:
    """`model_token_logprobs` for a model that reads a conditioning block before every Bar
    (`GPTConfig.bar_conditions`): the piece is read so (the block in force put before each Bar that lacks
    one), and a Bar after music is scored by the model's own end-of-bar prediction, log P(Bar) at the bar's
    last token, before the block (what it was trained to predict there). Same positions as `ids`."""
    ids = [int(i) for i in ids]
    expanded: list[int] = []
    where: list[int] = []  # index of ids[t] in `expanded`
    genre = mood = None
    for token in ids:
        if vocab.is_genre(token):
            genre = token
        elif vocab.is_mood(token):
            mood = token
        elif token == vocab.bar_id and genre is not None and mood is not None and not (
                expanded and vocab.is_condition(expanded[-1])):
            expanded += [genre, mood]
        where.append(len(expanded))
        expanded.append(token)
    targets = list(expanded)
    ends_bar = [e for e in range(1, len(expanded) - 2) if vocab.is_genre(expanded[e])
                and not vocab.is_condition(expanded[e - 1]) and expanded[e + 2] == vocab.bar_id]
    for e in ends_bar:
        targets[e] = vocab.bar_id
    logprobs = model_token_logprobs(model, vocab, expanded, device, targets)
    out = np.zeros(max(0, len(ids) - 1))
    ends = set(ends_bar)
    for t in range(1, len(ids)):
        e = where[t]
        out[t - 1] = logprobs[e - 3] if ids[t] == vocab.bar_id and e - 2 in ends else logprobs[e - 1]
    return out


def likelihoods(model, vocab, pieces, train_pieces, cap: int, device, progress: bool) -> dict:
    """Mean NLL (nats/token) of the model and of the trigram baseline on the same scored tokens."""
    from tqdm import tqdm

    from training.ngram import TrigramLM

    seqs = [np.asarray(p.ids[:cap], dtype=np.int64) for p in pieces]
    model_nll, positions = [], []
    for seq in tqdm(seqs, desc="model NLL", unit="piece", disable=not progress, leave=False):
        pos = scored_positions(vocab, seq)
        positions.append(pos)
        if pos.size:
            logprobs = (bar_conditioned_logprobs if model.config.bar_conditions else model_token_logprobs)
            model_nll.append(-logprobs(model, vocab, seq, device)[pos - 1])
    model_nll = np.concatenate(model_nll) if model_nll else np.zeros(0)
    if model_nll.size == 0:
        raise MoodstreamError("no music tokens to score in the evaluation data")
    result = {"nll_per_token": float(model_nll.mean()), "nll_scored_tokens": int(model_nll.size),
              "ngram_nll_per_token": None, "ngram_train_tokens": 0}
    if train_pieces:
        lm = TrigramLM(vocab.vocab_size).fit(np.asarray(p.ids, dtype=np.int64) for p in train_pieces)
        ngram_nll = []
        for seq, pos in zip(seqs, positions):
            probs = lm.token_probs([seq])
            ngram_nll.append(-np.log(probs[pos]))
        result["ngram_nll_per_token"] = float(np.concatenate(ngram_nll).mean())
        result["ngram_train_tokens"] = lm.n_tokens
        result["nll_improvement_over_ngram"] = 1.0 - result["nll_per_token"] / result["ngram_nll_per_token"]
    return result


# ---- generation ---------------------------------------------------------------------------------------------------
def bar_decodes_cleanly(vocab, table, bar_ids: Sequence[int]) -> bool:
    """True if MidiTok decodes the bar and every note token became a note (nothing dropped)."""
    from training.musicstats import PITCH, PITCH_DRUM

    n_note_tokens = int(np.isin(table.kind[np.asarray(bar_ids, dtype=np.int64)], (PITCH, PITCH_DRUM)).sum())
    try:
        score = vocab.decode(bar_ids)
    except Exception:  # MidiTok raises assorted errors on broken sequences
        return False
    return sum(len(track.notes) for track in score.tracks) == n_note_tokens


# ---- the whole evaluation ----------------------------------------------------------------------------------------
def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _classifier_for(model_dir: Path, vocab, meta: dict, data: EvalData, out_dir: Path, progress: bool):
    """The model's classifier; if it has none, one trained on the model's dataset (saved beside the model)
    or on the manifest's train rows (saved in out_dir)."""
    from model.paths import CLASSIFIER_DIR
    from training.classifier import load_classifier, load_dataset_pieces, train_classifier_on_pieces

    clf_dir = model_dir / CLASSIFIER_DIR
    if clf_dir.is_dir():
        return load_classifier(clf_dir, vocab), str(clf_dir)
    trained_on = model_dataset(meta)
    if trained_on is not None and _dataset_matches(trained_on, vocab):
        log.warning("%s has no classifier: training one on %s", model_dir, trained_on)
        clf = train_classifier_on_pieces(vocab, load_dataset_pieces(trained_on, "train"),
                                         load_dataset_pieces(trained_on, "validation"), progress=progress)
        clf.meta["summary"]["data"] = str(trained_on)
        clf.save(clf_dir, vocab)
        return clf, f"{clf_dir} (trained now on {trained_on})"
    if data.kind == "manifest" and data.train_pieces:
        log.warning("%s has no classifier and no training dataset: training one on %s", model_dir,
                    data.train_source)
        clf = train_classifier_on_pieces(vocab, data.train_pieces, progress=progress)
        clf.meta["summary"]["data"] = data.train_source
        clf.save(out_dir / CLASSIFIER_DIR, vocab)
        return clf, f"{out_dir / CLASSIFIER_DIR} (trained now on {data.train_source})"
    raise MoodstreamError(f"{model_dir}: no classifier ({CLASSIFIER_DIR}/) and no training data to train one; "
                          "run `moodstream evaluate --train-classifier --data DATASET --model M` first")


def balanced_accuracy(confusion: np.ndarray) -> float | None:
    """Mean per-class recall over the classes that occur (rows of a label × prediction matrix)."""
    rows = confusion.sum(1)
    present = rows > 0
    return float((np.diag(confusion)[present] / rows[present]).mean()) if present.any() else None


def real_accuracy(clf, pieces, window_bars: int, max_windows: int, progress: bool) -> dict:
    from tqdm import tqdm

    from training.classifier import tiled_windows

    counts = {key: [0, 0] for key in ("genre", "mood_human", "mood_derived", "genre_bar", "mood_bar")}
    confusion = {"genre": np.zeros((len(clf.genres), len(clf.genres)), int),
                 "mood": np.zeros((len(clf.moods), len(clf.moods)), int)}
    for piece in tqdm(pieces, desc="classify real", unit="piece", disable=not progress, leave=False):
        genre_ok, mood_ok = piece.genre in clf.genres, piece.mood in clf.moods
        if not (genre_ok or mood_ok):
            continue
        view = clf.prepare(piece.ids)
        mood_key = "mood_human" if piece.mood_origin == "human" else "mood_derived"
        for (genre, mood) in clf.classify(view, tiled_windows(view, window_bars, max_windows)):
            if genre_ok:
                counts["genre"][0] += genre == piece.genre
                counts["genre"][1] += 1
                confusion["genre"][clf.genres.index(piece.genre), clf.genres.index(genre)] += 1
            if mood_ok:
                counts[mood_key][0] += mood == piece.mood
                counts[mood_key][1] += 1
                if piece.mood_origin == "human":
                    confusion["mood"][clf.moods.index(piece.mood), clf.moods.index(mood)] += 1
        for (genre, mood) in clf.classify(view, tiled_windows(view, 1, max_windows * window_bars)):
            if genre_ok:
                counts["genre_bar"][0] += genre == piece.genre
                counts["genre_bar"][1] += 1
            if mood_ok and piece.mood_origin == "human":
                counts["mood_bar"][0] += mood == piece.mood
                counts["mood_bar"][1] += 1
    skipped = sorted({p.genre for p in pieces if p.genre != "any" and p.genre not in clf.genres})
    return {
        "classifier_genre_acc_real_balanced": balanced_accuracy(confusion["genre"]),
        "classifier_mood_acc_real_balanced": balanced_accuracy(confusion["mood"]),
        "classifier_genre_acc_real": _rate(*counts["genre"]),
        "classifier_mood_acc_real": _rate(*counts["mood_human"]),
        "classifier_mood_acc_real_derived": _rate(*counts["mood_derived"]),
        "classifier_genre_acc_real_bar": _rate(*counts["genre_bar"]),
        "classifier_mood_acc_real_bar": _rate(*counts["mood_bar"]),
        "windows": {k: v[1] for k, v in counts.items()},
        "genres_unknown_to_classifier": skipped,
        "confusion": {k: v.tolist() for k, v in confusion.items()},
        "genre_labels": list(clf.genres),  # the confusion matrices' rows and columns
    }


def generation_figures(model, vocab, clf, cfg: EvalConfig, sampling: dict, progress: bool) -> dict:
    """Write every planned stream through the streaming generator (`training.switching`) and judge it:
    accuracies of the bars before the first switch, syntax validity, and bars b+0 … b+7 after each switch."""
    from tqdm import tqdm

    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig
    from training.musicstats import TokenTable
    from training.switching import ADHERENCE_BARS, judge_switches, switch_plan, write_stream

    table = TokenTable.from_vocab(vocab)
    genres = [g for g in vocab.genres if g in clf.genres]
    moods = [m for m in vocab.moods if m in clf.moods]
    plans = switch_plan(genres, moods, cfg.bars_per_pair, cfg.switches_per_stream, ADHERENCE_BARS,
                        cfg.streams_per_pair, cfg.seed)
    controls = Controls(temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
                        guidance_w=sampling["guidance_w"])
    config = GeneratorConfig(max_bar_tokens=sampling["max_tokens_per_bar"],
                             max_tokens_per_beat=sampling["max_tokens_per_beat"],
                             **{name: sampling[name] for name in GENERATOR_OPTIONS})
    K = cfg.bars_per_pair
    acc = {k: [0, 0] for k in ("genre", "mood", "genre_bar", "mood_bar", "valid")}
    confusion = {"genre": np.zeros((len(clf.genres), len(clf.genres)), int),
                 "mood": np.zeros((len(clf.moods), len(clf.moods)), int)}
    streams, views, pairs = [], [], []
    bar = tqdm(total=sum(p.n_bars for p in plans), desc="generate", unit="bar", disable=not progress, leave=False)
    for plan in plans:
        stream = write_stream(model, vocab, plan, controls, config, cfg.lookahead_bars)
        bar.update(plan.n_bars)
        streams.append(stream)
        for written in stream.bars:
            acc["valid"][0] += bar_decodes_cleanly(vocab, table, vocab.strip_conditions(written.tokens))
            acc["valid"][1] += 1
        g, m = plan.start.genre, plan.start.mood
        view = clf.prepare(stream.ids)
        views.append(view)
        length = min(cfg.window_bars, K)
        windows = [(b, b + length) for b in range(0, K - length + 1, length)]  # empty windows count too
        entry = {"genre": g, "mood": m, "windows": [], "tokens": len(stream.ids), "forced_bars": stream.forced_bars,
                 "switches": [{"at_bar": s.at_bar, "axis": s.axis, "to": [s.conditions.genre, s.conditions.mood]}
                              for s in plan.switches]}
        for genre, mood in clf.classify(view, windows):
            acc["genre"][0] += genre == g
            acc["mood"][0] += mood == m
            acc["genre"][1] += 1
            acc["mood"][1] += 1
            confusion["genre"][clf.genres.index(g), clf.genres.index(genre)] += 1
            confusion["mood"][clf.moods.index(m), clf.moods.index(mood)] += 1
            entry["windows"].append([genre, mood])
        for genre, mood in clf.classify(view, [(b, b + 1) for b in range(K)]):
            acc["genre_bar"][0] += genre == g
            acc["mood_bar"][0] += mood == m
            acc["genre_bar"][1] += 1
            acc["mood_bar"][1] += 1
        pairs.append(entry)
    bar.close()
    switches = {axis: hits.summary() for axis, hits in judge_switches(clf, streams, views).items()}
    total = sum(s["switches"] for s in switches.values())
    overall = sum((s["rate"] or 0.0) * s["switches"] for s in switches.values()) / total if total else None
    return {
        "generated_genre_acc": _rate(*acc["genre"]), "generated_mood_acc": _rate(*acc["mood"]),
        "generated_genre_acc_bar": _rate(*acc["genre_bar"]), "generated_mood_acc_bar": _rate(*acc["mood_bar"]),
        "syntax_valid_bar_rate": _rate(*acc["valid"]),
        "switch_success_rate": overall,
        "switch_success_rate_genre": switches["genre"]["rate"], "switch_success_rate_mood": switches["mood"]["rate"],
        "switches": switches,
        "generated_bars": acc["valid"][1], "generated_tokens": sum(len(s.ids) for s in streams),
        "bars_cut_at_token_cap": sum(s.forced_bars for s in streams),
        "token_cap_per_bar": min(sampling["max_tokens_per_bar"],
                                 min(sampling["context_tokens"] or model.config.block_size, model.config.block_size)
                                 // 2 - 8),
        "pairs": pairs, "streams": streams,
        "confusion": {k: v.tolist() for k, v in confusion.items()},
        "genres": genres, "moods": moods,
    }


def switch_ceiling(clf, vocab, pieces, cfg: EvalConfig) -> dict:
    """The same per-bar judge on real pieces spliced where one axis changes (`training.switching.real_splices`)."""
    from training.switching import real_splices

    hits = real_splices(clf, vocab, pieces, cfg.ceiling_splices, cfg.bars_per_pair, cfg.seed)
    return {axis: h.summary() for axis, h in hits.items()}


def music_statistics(vocab, pieces, streams, bars_per_piece: int) -> dict:
    """Per-bar statistics of real pieces (first `bars_per_piece` bars) and of the generated streams;
    distances matched by genre: mean over genres of W1(generated_g, real_g), over the pooled real std."""
    from training.musicstats import (FAMILY_NAMES, STAT_NAMES, TokenTable, bar_stats, family_counts, parse_notes,
                                     stat_distances, total_variation, wasserstein_1d)

    table = TokenTable.from_vocab(vocab)
    real: dict[str, dict[str, list]] = {}
    families: dict[str, dict[str, np.ndarray]] = {"real": {}, "generated": {}}  # genre → notes per family

    def add_families(kind: str, genre: str, counts: np.ndarray) -> None:
        families[kind][genre] = families[kind].get(genre, np.zeros(len(FAMILY_NAMES))) + counts

    for piece in pieces:
        bar_starts = np.flatnonzero(np.asarray(piece.ids) == vocab.bar_id)
        end = bar_starts[bars_per_piece] if len(bar_starts) > bars_per_piece else len(piece.ids)
        parsed = parse_notes(table, piece.ids[:end])
        stats = bar_stats(parsed)
        for name in STAT_NAMES:
            real.setdefault(piece.genre, {n: [] for n in STAT_NAMES})[name].append(stats[name])
        add_families("real", piece.genre, family_counts(parsed))
    generated: dict[str, dict[str, list]] = {}
    for stream in streams:
        parsed = parse_notes(table, stream.ids)
        stats = bar_stats(parsed)
        for b, cond in enumerate(stream.conditions):
            for name in STAT_NAMES:
                generated.setdefault(cond.genre, {n: [] for n in STAT_NAMES})[name].append(stats[name][b:b + 1])
            add_families("generated", cond.genre, family_counts(parsed, slice(b, b + 1)))

    def flat(groups: dict, genre=None) -> dict[str, np.ndarray]:
        chosen = [groups[genre]] if genre is not None else list(groups.values())
        out = {}
        for name in STAT_NAMES:
            values = np.concatenate([np.concatenate(g[name]) if g[name] else np.zeros(0) for g in chosen]) \
                if chosen else np.zeros(0)
            out[name] = values[~np.isnan(values)]
        return out

    real_all, gen_all = flat(real), flat(generated)
    pooled = stat_distances(real_all, gen_all)
    shared = [g for g in generated if g in real and g != "any"]
    result = {}
    for name in STAT_NAMES:
        entry = dict(pooled[name])
        entry["pooled_distance"] = entry.pop("distance")
        scale = float(real_all[name].std()) if real_all[name].size else 0.0
        scale = scale if scale > 1e-9 else 1.0
        per_genre = {}
        for genre in shared:
            r, gvals = flat(real, genre)[name], flat(generated, genre)[name]
            if r.size and gvals.size:
                per_genre[genre] = wasserstein_1d(gvals, r) / scale
        entry["per_genre"] = per_genre
        entry["distance"] = float(np.mean(list(per_genre.values()))) if per_genre else entry["pooled_distance"]
        entry["matched_by_genre"] = bool(per_genre)
        result[name] = entry
    per_genre_families = {}
    for genre in shared:
        distance = total_variation(families["generated"].get(genre, np.zeros(1)), families["real"].get(genre, np.zeros(1)))
        if distance is not None:
            per_genre_families[genre] = distance
    result[INSTRUMENT_FAMILY] = {
        "distance": float(np.mean(list(per_genre_families.values()))) if per_genre_families else None,
        "per_genre": per_genre_families, "matched_by_genre": bool(per_genre_families),
        "families": list(FAMILY_NAMES),
        "real_share": {g: (c / c.sum()).round(4).tolist() for g, c in families["real"].items() if c.sum() > 0},
        "generated_share": {g: (c / c.sum()).round(4).tolist() for g, c in families["generated"].items()
                            if c.sum() > 0}}
    return {"stats": result, "real_values": real_all, "generated_values": gen_all}


def per_genre_figures(real: dict, gen: dict, music: dict) -> dict:
    """Per genre: the classifier's accuracy on real windows and on generated ones (against the requested
    genre), their ratio, the mean music-statistic distance and the instrument-family distance."""
    labels = real["genre_labels"]  # both confusions are indexed by the classifier's genres
    real_conf, gen_conf = np.asarray(real["confusion"]["genre"]), np.asarray(gen["confusion"]["genre"])
    stats = music["stats"]
    out = {}
    for genre in gen["genres"]:
        if genre == "any" or genre not in labels:
            continue
        i = labels.index(genre)
        real_acc = _rate(int(real_conf[i, i]), int(real_conf[i].sum()))
        gen_acc = _rate(int(gen_conf[i, i]), int(gen_conf[i].sum()))
        distances = [stats[name]["per_genre"][genre] for name in stats
                     if name != INSTRUMENT_FAMILY and genre in stats[name]["per_genre"]]
        out[genre] = {
            "classifier_acc_real": real_acc, "generated_acc": gen_acc,
            "generated_vs_real": gen_acc / real_acc if gen_acc is not None and real_acc else None,
            "music_stat_distance": float(np.mean(distances)) if distances else None,
            "instrument_family_distance": stats[INSTRUMENT_FAMILY]["per_genre"].get(genre)}
    return out


def evaluate(model_dir: str | Path, data: str | Path, out_dir: str | Path, config: EvalConfig = EvalConfig(),
             progress: bool = True) -> dict:
    """Run the whole evaluation; write report.json, report.md and plots into `out_dir`; return the report."""
    import torch

    from model.checkpoint import load_checkpoint
    from model.engine import default_device, prepare_for_decoding

    start = time.monotonic()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    torch.manual_seed(config.seed)
    device = config.device or default_device()
    model, vocab, meta = load_checkpoint(model_dir, device="cpu")
    model = prepare_for_decoding(model, device)
    sampling = config.sampling()
    data_info = load_eval_data(Path(data), vocab, meta, progress)
    if config.ngram_from is not None:
        data_info.train_pieces, data_info.train_source = ngram_pieces(Path(config.ngram_from), vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = time.monotonic()
    if data_info.train_pieces is None:
        data_info.notes.append("no training split found for the trigram baseline (the manifest has no train rows "
                               "and the model names no training dataset): ngram_nll_per_token is null")
    nll = likelihoods(model, vocab, data_info.pieces, data_info.train_pieces, config.nll_tokens_per_piece,
                      device, progress)
    timings["nll_s"] = time.monotonic() - t

    t = time.monotonic()
    clf, clf_source = _classifier_for(model_dir, vocab, meta, data_info, out_dir, progress)
    real = real_accuracy(clf, data_info.pieces, config.window_bars, config.max_windows_per_piece, progress)
    timings["classify_real_s"] = time.monotonic() - t

    t = time.monotonic()
    gen = generation_figures(model, vocab, clf, config, sampling, progress)
    timings["generate_s"] = time.monotonic() - t
    t = time.monotonic()
    ceiling = switch_ceiling(clf, vocab, data_info.pieces, config)
    timings["ceiling_s"] = time.monotonic() - t
    music = music_statistics(vocab, data_info.pieces, gen["streams"], config.stats_bars_per_piece)
    switching = switch_figures(gen["switches"], ceiling)
    per_genre = per_genre_figures(real, gen, music)

    report = {
        "model": str(model_dir), "data": str(data), "data_kind": data_info.kind,
        "pieces": len(data_info.pieces),
        **{k: nll[k] for k in ("nll_per_token", "ngram_nll_per_token")},
        **{k: real[k] for k in ("classifier_genre_acc_real", "classifier_mood_acc_real",
                                "classifier_mood_acc_real_derived", "classifier_genre_acc_real_bar",
                                "classifier_mood_acc_real_bar", "classifier_genre_acc_real_balanced",
                                "classifier_mood_acc_real_balanced")},
        **{k: gen[k] for k in ("generated_genre_acc", "generated_mood_acc", "generated_genre_acc_bar",
                               "generated_mood_acc_bar", "syntax_valid_bar_rate", "switch_success_rate",
                               "switch_success_rate_genre", "switch_success_rate_mood")},
        **switching,
        "music_stat_distance": {name: e["distance"] for name, e in music["stats"].items()},
        "per_genre": per_genre,
        "details": {
            "nll": {k: v for k, v in nll.items() if k not in ("nll_per_token", "ngram_nll_per_token")},
            "ngram_train": data_info.train_source or None,
            "classifier": {"source": clf_source, "genres": list(clf.genres), "moods": list(clf.moods),
                           "training": clf.meta.get("summary", {}), "real_windows": real["windows"],
                           "genres_unknown_to_classifier": real["genres_unknown_to_classifier"],
                           "confusion_real": real["confusion"], "confusion_generated": gen["confusion"]},
            "generation": {"pairs": gen["pairs"], "genres": gen["genres"], "moods": gen["moods"],
                           "generated_bars": gen["generated_bars"], "generated_tokens": gen["generated_tokens"],
                           "bars_cut_at_token_cap": gen["bars_cut_at_token_cap"],
                           "token_cap_per_bar": gen["token_cap_per_bar"]},
            "switches": {"generated": gen["switches"], "ceiling": ceiling},
            "music_stats": music["stats"],
        },
        "goals": goals(nll, real, gen, switching, per_genre),
        "settings": {**asdict(config), **sampling, "device": str(device)},
        "notes": data_info.notes,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    report["elapsed_s"] = round(time.monotonic() - start, 1)
    plot_music_stats(music, out_dir / STATS_PNG)
    plot_confusions(report["details"]["classifier"], out_dir / CONFUSION_PNG)
    plot_adherence(report, out_dir / ADHERENCE_PNG)
    seam = _seam_example(gen["streams"])
    if seam is not None:
        plot_seam(vocab, *seam, out_dir / SEAM_PNG)
    _write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=_json_default) + "\n")
    _write_text(out_dir / REPORT_MD, render_markdown(report))
    return report


def switch_figures(generated: dict, ceiling: dict) -> dict:
    """The switch keys of the report: success per axis against the real-music ceiling, the adherence curves
    and the standard error of the switch figures."""
    out = {}
    for axis in ("genre", "mood"):
        rate, top = generated[axis]["rate"], ceiling[axis]["rate"]
        out[f"switch_ceiling_{axis}"] = top
        out[f"switch_success_vs_ceiling_{axis}"] = rate / top if rate is not None and top else None
    out["adherence_after_switch"] = {axis: generated[axis]["curve"] for axis in ("genre", "mood")}
    out["adherence_ceiling"] = {axis: ceiling[axis]["curve"] for axis in ("genre", "mood")}
    errors = [generated[axis]["se"] for axis in ("genre", "mood") if generated[axis]["se"] is not None]
    out["switch_success_se"] = max(errors) if errors else None
    out["switch_seam"] = {"generated": _seam(generated), "real_splices": _seam(ceiling)}
    return out


def _seam(per_axis: dict) -> dict:
    """How the first bar after a switch sits against the bar before, over both axes (weighted by switches)."""
    out = {}
    for key in ("silent_first_bar_rate", "tempo_change_median"):
        pairs = [(per_axis[a][key], per_axis[a]["switches"]) for a in ("genre", "mood") if per_axis[a][key] is not None]
        weight = sum(n for _, n in pairs)
        out[key] = sum(v * n for v, n in pairs) / weight if weight else None
    return out


def goals(nll: dict, real: dict, gen: dict, switching: dict, per_genre: dict | None = None) -> dict:
    """The default model's goals (issues 17 and 18), each with the figure it compares and whether it is met."""
    out = {}

    def goal(name: str, value, target, met=None) -> None:
        met = value >= target if met is None and value is not None and target is not None else met
        out[name] = {"value": value, "target": target, "met": None if value is None or target is None else met}

    goal("syntax_valid_bar_rate", gen["syntax_valid_bar_rate"], 1.0)
    for axis in ("genre", "mood"):
        real_acc, gen_acc = real[f"classifier_{axis}_acc_real"], gen[f"generated_{axis}_acc"]
        goal(f"generated_{axis}_acc", gen_acc, 0.9 * real_acc if real_acc is not None else None)
    for axis in ("genre", "mood"):
        goal(f"switch_success_vs_ceiling_{axis}", switching[f"switch_success_vs_ceiling_{axis}"], 0.9)
        after, top = switching["adherence_after_switch"][axis][1], switching["adherence_ceiling"][axis][1]
        goal(f"adherence_after_switch_1_{axis}", after, 0.8 * top if top is not None else None)
    ngram = nll.get("ngram_nll_per_token")
    target = 0.6 * ngram if ngram is not None else None
    goal("nll_per_token", nll["nll_per_token"], target,
         target is not None and nll["nll_per_token"] is not None and nll["nll_per_token"] <= target)
    ratios = [g["generated_vs_real"] for g in (per_genre or {}).values() if g["generated_vs_real"] is not None]
    goal("generated_genre_acc_per_genre", min(ratios) if ratios else None, 0.9 if ratios else None)
    return out


def ngram_pieces(dataset: Path, vocab) -> tuple[list, str]:
    """The training split of a built dataset (for the trigram), checked against the model's vocabulary."""
    from training.classifier import load_dataset_pieces

    if not (dataset / "index.jsonl").is_file():
        raise MoodstreamError(f"--ngram-from {dataset}: not a built dataset (no index.jsonl)")
    if not _dataset_matches(dataset, vocab):
        raise MoodstreamError(f"--ngram-from {dataset}: its tokenizer.json differs from the model's vocabulary")
    pieces = load_dataset_pieces(dataset, "train")
    if not pieces:
        raise MoodstreamError(f"--ngram-from {dataset}: the dataset has no training pieces")
    return pieces, f"{dataset} (train split, --ngram-from)"


# ---- output ----------------------------------------------------------------------------------------------------------
def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def plot_music_stats(music: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.musicstats import STAT_NAMES

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, name in zip(axes.flat, STAT_NAMES):
        r, g = music["real_values"][name], music["generated_values"][name]
        both = np.concatenate([r, g])
        bins = np.linspace(both.min(), both.max() + 1e-9, 30) if both.size else 10
        if r.size:
            ax.hist(r, bins=bins, density=True, alpha=0.5, label=f"real ({r.size} bars)")
        if g.size:
            ax.hist(g, bins=bins, density=True, alpha=0.5, label=f"generated ({g.size} bars)")
        d = music["stats"][name]["distance"]
        ax.set_title(f"{name}\ndistance {d:.3f}" if d is not None else name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_confusions(classifier: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("real: genre", classifier["confusion_real"]["genre"], classifier["genres"]),
              ("real: mood (human labels)", classifier["confusion_real"]["mood"], classifier["moods"]),
              ("generated: genre", classifier["confusion_generated"]["genre"], classifier["genres"]),
              ("generated: mood", classifier["confusion_generated"]["mood"], classifier["moods"])]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    for ax, (title, matrix, labels) in zip(axes, panels):
        m = np.asarray(matrix, dtype=float)
        rows = m.sum(1, keepdims=True)
        shown = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(shown, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("classified as", fontsize=8)
        ax.set_ylabel("label / requested", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_adherence(report: dict, path: Path) -> None:
    """Share of bar b+k classified as the new target after a switch, generated against spliced real music."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, axis in zip(axes, ("genre", "mood")):
        for key, label, style in (("adherence_after_switch", "generated", "o-"), ("adherence_ceiling",
                                                                                  "real splices (ceiling)", "s--")):
            curve = [np.nan if v is None else v for v in report[key][axis]]
            ax.plot(range(len(curve)), curve, style, label=label)
        ax.set_title(f"{axis} switches", fontsize=10)
        ax.set_xlabel("bar after the switch (b + k)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("classified as the new target")
    fig.tight_layout()
    _save_figure(fig, path)


def _seam_example(streams) -> tuple | None:
    """(stream, switch) of the first stream with a switch, for the piano roll around it."""
    for stream in streams:
        if stream.plan.switches:
            return stream, stream.plan.switches[0]
    return None


def plot_seam(vocab, stream, switch, path: Path, before: int = 2, after: int = 4) -> None:
    """Piano roll of the bars around a switch: pitched notes by pitch, drums as marks below, bar lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.musicstats import TokenTable, parse_notes

    parsed = parse_notes(TokenTable.from_vocab(vocab), vocab.strip_conditions(stream.ids))
    b0, b1 = max(0, switch.at_bar - before), min(parsed.n_bars, switch.at_bar + after)
    t0, t1 = parsed.bar_start_beats[b0], parsed.bar_start_beats[b1]
    fig, ax = plt.subplots(figsize=(13, 4.5))
    chosen = (parsed.bar >= b0) & (parsed.bar < b1)
    pitched, drums = chosen & ~parsed.is_drum, chosen & parsed.is_drum
    ax.barh(parsed.pitch[pitched], parsed.duration_beats[pitched], left=parsed.onset_beats[pitched], height=0.8,
            color="tab:blue", alpha=0.7, label="pitched notes")
    ax.scatter(parsed.onset_beats[drums], 14 + (parsed.pitch[drums] % 12), marker="|", color="tab:red", s=30,
               label="drums")
    for b in range(b0, b1 + 1):
        ax.axvline(parsed.bar_start_beats[b], color="black" if b == switch.at_bar else "0.7",
                   lw=2 if b == switch.at_bar else 0.8)
    for b in range(b0, b1):
        tempo = parsed.tempo_bpm[b]
        label = f"{stream.bars[b].conditions.genre}/{stream.bars[b].conditions.mood}"
        ax.text(parsed.bar_start_beats[b] + 0.1, 108, label + ("" if np.isnan(tempo) else f"\n{tempo:.0f} bpm"),
                fontsize=7, va="top")
    old = stream.bars[switch.at_bar - 1].conditions if switch.at_bar > 0 else None
    ax.set_title(f"switch at bar {switch.at_bar}: {old.genre}/{old.mood} → {switch.conditions.genre}/"
                 f"{switch.conditions.mood} (seed {stream.plan.seed})" if old else f"switch at bar {switch.at_bar}",
                 fontsize=10)
    ax.set_xlim(t0, t1)
    ax.set_ylim(12, 110)
    ax.set_xlabel("beats")
    ax.set_ylabel("pitch")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save_figure(fig, path)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    from training.musicstats import STAT_DESCRIPTIONS

    d, s = report["details"], report["settings"]
    lines = [
        "# moodstream evaluate",
        "",
        f"- model: `{report['model']}`",
        f"- data: `{report['data']}` ({report['data_kind']}, {report['pieces']} pieces judged)",
        f"- took {report['elapsed_s']} s on {s['device']} (seed {s['seed']})",
        "",
        "## Figures",
        "",
        "| key | value | what it is |",
        "|---|---|---|",
        f"| nll_per_token | {_fmt(report['nll_per_token'])} | the model's mean negative log-likelihood (nats) |",
        f"| ngram_nll_per_token | {_fmt(report['ngram_nll_per_token'])} | interpolated trigram (absolute "
        f"discounting, d = 0.75) fitted on {d['ngram_train'] or '—'} |",
        f"| classifier_genre_acc_real | {_fmt(report['classifier_genre_acc_real'])} | classifier on real "
        f"{s['window_bars']}-bar windows |",
        f"| classifier_mood_acc_real | {_fmt(report['classifier_mood_acc_real'])} | same, mood, human-labelled "
        "pieces |",
        f"| classifier_mood_acc_real_derived | {_fmt(report['classifier_mood_acc_real_derived'])} | same, mood, "
        "pieces whose mood is derived from the music (mode, tempo, density) |",
        f"| generated_genre_acc | {_fmt(report['generated_genre_acc'])} | generated {s['window_bars']}-bar "
        "windows classified as the requested genre |",
        f"| generated_mood_acc | {_fmt(report['generated_mood_acc'])} | same, mood |",
        f"| syntax_valid_bar_rate | {_fmt(report['syntax_valid_bar_rate'])} | generated bars MidiTok decodes "
        "with every note token becoming a note |",
        f"| switch_success_rate | {_fmt(report['switch_success_rate'])} | after a switch at bar b (the first "
        "bar under the new conditions), bars b+1…b+3 classified (one bar at a time) as the new target, on the "
        "axis that changed |",
        f"| switch_success_rate_genre / _mood | {_fmt(report['switch_success_rate_genre'])} / "
        f"{_fmt(report['switch_success_rate_mood'])} | the same, switches of one axis (the other unchanged) |",
        f"| switch_ceiling_genre / _mood | {_fmt(report['switch_ceiling_genre'])} / "
        f"{_fmt(report['switch_ceiling_mood'])} | the same judge on real validation pieces spliced at a bar line "
        "where exactly one axis changes: what a perfect generator scores |",
        f"| switch_success_vs_ceiling_genre / _mood | {_fmt(report['switch_success_vs_ceiling_genre'])} / "
        f"{_fmt(report['switch_success_vs_ceiling_mood'])} | success ÷ ceiling |",
        f"| switch_success_se | {_fmt(report['switch_success_se'])} | standard error of the per-axis success rates "
        "(the larger; over switches) |",
        "",
        "The real data's genre mix is uneven while every genre is generated equally often: the class-balanced "
        f"real accuracies (mean recall per class) are genre {_fmt(report['classifier_genre_acc_real_balanced'])}, "
        f"mood {_fmt(report['classifier_mood_acc_real_balanced'])} (human labels).",
        "",
        "Per single bar (the unit switch success is judged on): classifier on real bars "
        f"genre {_fmt(report['classifier_genre_acc_real_bar'])}, mood {_fmt(report['classifier_mood_acc_real_bar'])}; "
        f"generated bars genre {_fmt(report['generated_genre_acc_bar'])}, mood "
        f"{_fmt(report['generated_mood_acc_bar'])}. Switches of genre succeed "
        f"{_fmt(report['switch_success_rate_genre'])}, of mood {_fmt(report['switch_success_rate_mood'])}.",
        "",
        "## Which tokens the likelihoods score",
        "",
        f"Both models read the same real token sequences: the first {s['nll_tokens_per_piece']} tokens of each "
        "piece, conditioning block (`Genre_*`, `Mood_*`) included. Both are scored on the same "
        f"{d['nll']['nll_scored_tokens']} tokens: every music token after the first token of the piece; the "
        "condition tokens are context only, never scored. Pieces longer than the model's context are read in "
        "windows sliding by half a block, each window opening with the conditioning block in force. "
        f"The trigram saw {d['nll'].get('ngram_train_tokens', 0)} training tokens.",
        "",
        "## Following a switch",
        "",
        "Share of bar b+k (k = 0 is the first bar under the new conditions) classified as the new target, on "
        "the axis that changed; the ceiling is the same judge on spliced real music.",
        "",
        "| k | " + " | ".join(str(k) for k in range(len(report["adherence_after_switch"]["genre"]))) + " |",
        "|---|" + "---|" * len(report["adherence_after_switch"]["genre"]),
        *[f"| {label} | " + " | ".join(_fmt(v, 2) for v in report[key][axis]) + " |"
          for axis in ("genre", "mood")
          for key, label in (("adherence_after_switch", f"{axis}: generated"),
                             ("adherence_ceiling", f"{axis}: real splices"))],
        "",
        "The seam (bar b against bar b−1): silent first bars "
        f"{_fmt(report['switch_seam']['generated']['silent_first_bar_rate'])} generated, "
        f"{_fmt(report['switch_seam']['real_splices']['silent_first_bar_rate'])} in real splices; median tempo "
        f"change {_fmt(report['switch_seam']['generated']['tempo_change_median'])} generated, "
        f"{_fmt(report['switch_seam']['real_splices']['tempo_change_median'])} in real splices (|ratio − 1|).",
        "",
        f"![adherence after a switch]({ADHERENCE_PNG})",
        "",
        f"![piano roll around a switch]({SEAM_PNG})",
        "",
        "## Goals (issues 17 and 18)",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    names = {"syntax_valid_bar_rate": "syntax_valid_bar_rate = 1.0",
             "generated_genre_acc": "generated_genre_acc ≥ 0.9 × classifier_genre_acc_real",
             "generated_mood_acc": "generated_mood_acc ≥ 0.9 × classifier_mood_acc_real",
             "switch_success_vs_ceiling_genre": "switch_success_vs_ceiling_genre ≥ 0.9",
             "switch_success_vs_ceiling_mood": "switch_success_vs_ceiling_mood ≥ 0.9",
             "adherence_after_switch_1_genre": "adherence_after_switch[1], genre ≥ 0.8 × ceiling",
             "adherence_after_switch_1_mood": "adherence_after_switch[1], mood ≥ 0.8 × ceiling",
             "nll_per_token": "nll_per_token ≥ 40 % below ngram_nll_per_token",
             "generated_genre_acc_per_genre": "every genre: generated ÷ real genre accuracy ≥ 0.9 (the lowest)"}
    for key, g in report["goals"].items():
        met = {True: "yes", False: "**no**", None: "—"}[g["met"]]
        lines.append(f"| {names[key]} | {_fmt(g['value'])} | {_fmt(g['target'])} | {met} |")
    lines += [
        "",
        "## Musical statistics",
        "",
        "Each statistic is computed per bar; the distance is the 1-D Wasserstein (earth mover's) distance "
        "between the generated and the real per-bar values, divided by the standard deviation of the real "
        "values (so 1.0 = the distributions sit one real spread apart). It is matched by genre: the mean over "
        "genres of W1(generated bars requested as that genre, real bars of that genre); `pooled` ignores genre. "
        f"Real bars: the first {s['stats_bars_per_piece']} bars of each judged piece. Bars with nothing to "
        "measure (e.g. no pitched notes for polyphony) are left out.",
        "",
        "| statistic | distance | pooled | real mean | generated mean | what |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in d["music_stats"].items():
        if name == INSTRUMENT_FAMILY:
            continue
        lines.append(f"| {name} | {_fmt(e['distance'])} | {_fmt(e['pooled_distance'])} | {_fmt(e['real_mean'])} "
                     f"| {_fmt(e['generated_mean'])} | {STAT_DESCRIPTIONS[name]} |")
    gen, clf = d["generation"], d["classifier"]
    lines += [
        "",
        f"`{INSTRUMENT_FAMILY}`: {_fmt(report['music_stat_distance'][INSTRUMENT_FAMILY])}, the total variation "
        "distance (0 = the same mix, 1 = disjoint) between the notes' instrument families (General MIDI's 16 "
        "and drums) in generated and real bars of a genre, mean over genres.",
        "",
        f"![musical statistics]({STATS_PNG})",
        "",
        "## Per genre",
        "",
        "Classifier accuracy on real windows of the genre and on generated windows requested as it, their "
        "ratio (goal ≥ 0.9), the mean of the six statistics' distances and the instrument-family distance.",
        "",
        "| genre | real acc | generated acc | generated ÷ real | music_stat_distance | instrument_family |",
        "|---|---|---|---|---|---|",
        *[f"| {genre} | {_fmt(g['classifier_acc_real'])} | {_fmt(g['generated_acc'])} | "
          f"{_fmt(g['generated_vs_real'])} | {_fmt(g['music_stat_distance'])} | "
          f"{_fmt(g['instrument_family_distance'])} |" for genre, g in report["per_genre"].items()],
        "",
        "## Generation",
        "",
        f"{len(gen['pairs'])} streams, one per genre × mood pair ({', '.join(gen['genres'])} × "
        f"{', '.join(gen['moods'])}) × {s['streams_per_pair']}, written by the streaming generator on a fake clock "
        f"(`training.switching`): {s['bars_per_pair']} bars, then {s['switches_per_stream']} switches 8 bars apart, "
        "each changing one axis (alternating) to a seeded random other value, made live at the bar line before "
        f"the bar they govern with {s['lookahead_bars']} bar(s) written ahead (thrown away and rolled back, as in "
        f"play). Guidance weight {s['guidance_w']}, temperature {s['temperature']}, top-k {s['top_k']}, top-p "
        f"{s['top_p']}, old bars kept after a switch: "
        f"{'all that fit' if s['switch_context_bars'] is None else s['switch_context_bars']}. "
        f"{gen['generated_bars']} bars, {gen['generated_tokens']} tokens; {gen['bars_cut_at_token_cap']} bars closed "
        f"at the token cap ({gen['token_cap_per_bar']} per bar, {s['max_tokens_per_beat']:g} per beat). Switches "
        f"judged: {d['switches']['generated']['genre']['switches']} of genre, "
        f"{d['switches']['generated']['mood']['switches']} of mood; real splices: "
        f"{d['switches']['ceiling']['genre']['switches']} and {d['switches']['ceiling']['mood']['switches']}.",
        "",
        "## Classifier",
        "",
        f"From `{clf['source']}`; genres {', '.join(clf['genres'])}; moods {', '.join(clf['moods'])}. Windows "
        f"judged on real data: {clf['real_windows']}."
        + (f" Genres in the data the classifier does not know (left out): {', '.join(clf['genres_unknown_to_classifier'])}."
           if clf["genres_unknown_to_classifier"] else ""),
        "",
        f"![confusion matrices]({CONFUSION_PNG})",
        "",
        f"Timings (s): {report['timings_s']}.",
    ]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
