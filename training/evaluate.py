"""`moodstream evaluate`: how good a model is, in figures (issue 5).

`evaluate(model_dir, data, out_dir, config)` scores the model and a trigram baseline on the same real
tokens, judges real and generated music with the genre/mood classifier (training/classifier.py),
generates K bars for every genre × mood pair with grammar-constrained, guided sampling, switches the
conditions and checks that the music follows, and compares musical statistics of generated and real bars
(training/musicstats.py). It writes report.json, report.md and PNG plots into `out_dir` (each file under
a temporary name first) and returns the report dict. Seeds are fixed: the same inputs give the same
figures. This module loads the data and the judge and runs the steps; the likelihoods are in
training/likelihood.py, the judging in training/scoring.py, the report files in training/report.py.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.errors import MoodstreamError
from model.vocab import MOOD_NEGATIVES
from training.likelihood import likelihoods
from training.report import (ADHERENCE_PNG, CONFUSION_PNG, REPORT_JSON, REPORT_MD, SEAM_PNG, STATS_PNG,
                             json_default, seam_example, write_text, plot_adherence, plot_confusions,
                             plot_music_stats, plot_seam, render_markdown)
from training.scoring import (GENERATOR_OPTIONS, generation_figures, music_statistics, per_genre_figures,
                              real_accuracy, switch_ceiling, switch_figures)

log = logging.getLogger(__name__)

STREAMER = "default"  # an EvalConfig generator option's value meaning "the streamer's default"
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
    mood_negative: str = "default"  # guidance's second row for the mood: "null" or "opposite"
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
                  "mood_negative": self.mood_negative in (*MOOD_NEGATIVES, STREAMER),
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
    from training.pieces import load_dataset_pieces, load_manifest_pieces, read_manifest

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


# ---- the whole evaluation ----------------------------------------------------------------------------------------
def _classifier_for(model_dir: Path, vocab, meta: dict, data: EvalData, out_dir: Path, progress: bool):
    """The model's classifier; if it has none, one trained on the model's dataset (saved beside the model)
    or on the manifest's train rows (saved in out_dir)."""
    from model.paths import CLASSIFIER_DIR
    from training.classifier import load_classifier, train_classifier_on_pieces
    from training.pieces import load_dataset_pieces

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
    seam = seam_example(gen["streams"])
    if seam is not None:
        plot_seam(vocab, *seam, out_dir / SEAM_PNG)
    write_text(out_dir / REPORT_JSON, json.dumps(report, indent=2, default=json_default) + "\n")
    write_text(out_dir / REPORT_MD, render_markdown(report))
    return report


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
    from training.pieces import load_dataset_pieces

    if not (dataset / "index.jsonl").is_file():
        raise MoodstreamError(f"--ngram-from {dataset}: not a built dataset (no index.jsonl)")
    if not _dataset_matches(dataset, vocab):
        raise MoodstreamError(f"--ngram-from {dataset}: its tokenizer.json differs from the model's vocabulary")
    pieces = load_dataset_pieces(dataset, "train")
    if not pieces:
        raise MoodstreamError(f"--ngram-from {dataset}: the dataset has no training pieces")
    return pieces, f"{dataset} (train split, --ngram-from)"
