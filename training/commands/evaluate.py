"""`moodstream evaluate`: judge a model on a dataset or manifest (report.md, report.json, plots), or with
--train-classifier train the genre/mood classifier that evaluate uses."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers) -> None:
    from model.vocab import MOOD_NEGATIVES
    from training.evaluate import EvalConfig

    p = subparsers.add_parser(
        "evaluate", help="measure a model: likelihood vs a trigram, genre/mood adherence, switches, statistics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Judge a model (the bundled default unless --model) on --data: a dataset directory from "
        "`moodstream dataset build` (its validation split) or a manifest.csv in the format of "
        "shared/data/manifest.csv (its validation rows; all rows if it has no split column; paths relative to "
        "its folder). Writes report.md, report.json and PNG plots into --out.\n\n"
        "The genre/mood classifier that judges the music is read from <model>/classifier/. To make one:\n"
        "  moodstream evaluate --train-classifier --data DATASET [--model M]   (saves into <model>/classifier/)\n"
        "  moodstream evaluate --train-classifier --data DATASET --out DIR     (saves into DIR)\n"
        "It trains on the training split of DATASET only. Without one, evaluate trains it on the model's "
        "training dataset (or on the manifest's train rows).")
    p.add_argument("--model", help="checkpoint directory (default: the bundled model)")
    p.add_argument("--data", required=True, type=Path, help="dataset directory or manifest.csv")
    p.add_argument("--out", type=Path, help="report folder (default: runs/evaluate-<timestamp>)")
    p.add_argument("--json", action="store_true", help="also print the report JSON on stdout")
    p.add_argument("--bars-per-pair", type=int, default=4, metavar="K",
                   help="bars generated per genre × mood pair before its switch (default 4)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance weight (default: the streamer's default; 1 = off)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the streamer's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (default: the streamer's)")
    p.add_argument("--switches-per-stream", type=int, default=EvalConfig.switches_per_stream, metavar="N",
                   help="one-axis switches in each stream, 8 bars apart (default %(default)s)")
    p.add_argument("--streams-per-pair", type=int, default=EvalConfig.streams_per_pair, metavar="N",
                   help="streams per genre × mood pair, each with its own seed (default %(default)s)")
    p.add_argument("--switch-context", metavar="BARS|all",
                   help="old bars kept in the model's context after a switch (default: the streamer's)")
    p.add_argument("--switch-negative", choices=("any", "old"),
                   help="the guidance row after a switch: any (unconditioned) or old (the old conditions; "
                        "default: the streamer's)")
    p.add_argument("--mood-negative", choices=MOOD_NEGATIVES,
                   help="what guidance's second row reads for the mood: null (no mood) or opposite (the opposite "
                        "quadrant's mood, happy ↔ sad, tense ↔ calm; default: the streamer's)")
    p.add_argument("--switch-boost", metavar="W:BARS|off",
                   help="guidance weight W for the first BARS bars of a switch (default: the streamer's, off)")
    p.add_argument("--ceiling-splices", type=int, default=EvalConfig.ceiling_splices, metavar="N",
                   help="real splices per axis for the switch ceiling (default %(default)s)")
    p.add_argument("--ngram-from", type=Path, metavar="DATASET",
                   help="fit the trigram baseline on this built dataset's training split (e.g. when --data is a "
                        "manifest)")
    p.add_argument("--nll-tokens", type=int, default=1024, metavar="N",
                   help="score the first N tokens of each piece (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda if present)")
    p.add_argument("--train-classifier", action="store_true",
                   help="train the genre/mood classifier on --data's training split and save it, then exit")
    p.add_argument("--classifier-epochs", type=int, help="with --train-classifier (default: ClassifierConfig's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.paths import resolve_model_dir

    if args.train_classifier:
        return _train_classifier(args)
    from streamer.generator import parse_switch_context
    from training.evaluate import STREAMER, EvalConfig, evaluate

    model_dir = resolve_model_dir(args.model)
    out = args.out or Path("runs") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
    context = STREAMER if args.switch_context is None else parse_switch_context(args.switch_context)
    config = EvalConfig(bars_per_pair=args.bars_per_pair, switches_per_stream=args.switches_per_stream,
                        streams_per_pair=args.streams_per_pair, ceiling_splices=args.ceiling_splices,
                        guidance_w=args.guidance, temperature=args.temperature, top_p=args.top_p,
                        switch_context_bars=context, switch_negative=args.switch_negative or STREAMER,
                        mood_negative=args.mood_negative or STREAMER,
                        **_switch_boost(args.switch_boost), nll_tokens_per_piece=args.nll_tokens,
                        ngram_from=str(args.ngram_from) if args.ngram_from else None, seed=args.seed,
                        device=args.device)
    report = evaluate(model_dir, args.data, out, config, progress=not args.quiet)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        keys = ("nll_per_token", "ngram_nll_per_token", "classifier_genre_acc_real", "classifier_mood_acc_real",
                "classifier_mood_acc_real_derived", "generated_genre_acc", "generated_mood_acc",
                "syntax_valid_bar_rate", "switch_success_rate", "switch_success_rate_genre",
                "switch_success_rate_mood", "switch_ceiling_genre", "switch_ceiling_mood",
                "switch_success_vs_ceiling_genre", "switch_success_vs_ceiling_mood", "switch_success_se")
        for key in keys:
            value = report[key]
            print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
        for name, value in report["music_stat_distance"].items():
            print(f"{'distance ' + name:34s} {value:.3f}" if value is not None else f"{'distance ' + name:34s} -")
        print(f"took {report['elapsed_s']} s; report: {out / 'report.md'}")
    return 0


def _switch_boost(text: str | None) -> dict:
    """--switch-boost W:BARS|off → EvalConfig's switch_guidance_w and switch_boost_bars."""
    from model.errors import MoodstreamError
    from training.evaluate import STREAMER

    if text is None:
        return {"switch_guidance_w": STREAMER, "switch_boost_bars": STREAMER}
    if text.strip().lower() == "off":
        return {"switch_guidance_w": None, "switch_boost_bars": STREAMER}
    weight, _, bars = text.partition(":")
    try:
        w, n = float(weight), int(bars)
    except ValueError:
        raise MoodstreamError(f"--switch-boost {text!r}: write W:BARS (e.g. 3:2) or off") from None
    if not 0 <= w <= 10 or n < 1:
        raise MoodstreamError(f"--switch-boost {text!r}: W must be from 0 to 10 and BARS at least 1")
    return {"switch_guidance_w": w, "switch_boost_bars": n}


def _train_classifier(args: argparse.Namespace) -> int:
    from model.errors import MoodstreamError
    from model.paths import CLASSIFIER_DIR, TOKENIZER_FILE, resolve_model_dir
    from model.vocab import Vocab
    from training.classifier import ClassifierConfig, train_classifier

    vocab = None
    if args.out is None or args.model is not None:
        model_dir = resolve_model_dir(args.model)
        vocab = Vocab.load(model_dir / TOKENIZER_FILE)
        out = args.out or model_dir / CLASSIFIER_DIR
    else:
        out = args.out
        if not args.data.is_dir():  # a manifest: the default model's vocabulary, else the default one
            try:
                vocab = Vocab.load(resolve_model_dir(None) / TOKENIZER_FILE)
            except MoodstreamError:
                vocab = None
    if vocab is not None and args.data.is_dir():
        from model.checkpoint import vocab_digest

        data_vocab = Vocab.load(args.data / TOKENIZER_FILE)
        if vocab_digest(data_vocab) != vocab_digest(vocab):
            raise MoodstreamError(f"{args.data}: its tokenizer.json differs from the model's vocabulary; "
                                  "train the classifier on the dataset the model was trained on")
    settings = {"seed": args.seed, **({"epochs": args.classifier_epochs} if args.classifier_epochs else {})}
    summary = train_classifier(args.data, out, ClassifierConfig(**settings),
                               vocab=vocab, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"classifier saved to {out}: validation genre accuracy {summary.get('val_genre_acc')}, "
              f"mood (human labels) {summary.get('val_mood_acc_human')}, "
              f"mood (derived) {summary.get('val_mood_acc_derived')} ({summary['train_seconds']} s)")
        if summary.get("val_real_4bar_genre_recall"):
            print(f"real validation 4-bar windows: class-balanced genre accuracy "
                  f"{summary['val_real_4bar_genre_acc_balanced']}; per genre "
                  + ", ".join(f"{g} {r:.3f}" for g, r in summary["val_real_4bar_genre_recall"].items()))
    return 0
