"""Scoring of `moodstream evaluate`: the classifier on real windows, the generated streams judged per pair and
per switch, the real-music switch ceiling, musical statistics per genre and the per-genre table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from training.report import INSTRUMENT_FAMILY

if TYPE_CHECKING:
    from training.evaluate import EvalConfig

# the `GeneratorConfig` fields an `EvalConfig` may set for the streams it writes
GENERATOR_OPTIONS = ("switch_context_bars", "switch_negative", "switch_guidance_w", "switch_boost_bars",
                     "context_tokens", "mood_negative")

def bar_decodes_cleanly(vocab, table, bar_ids: Sequence[int]) -> bool:
    """True if MidiTok decodes the bar and every note token became a note (nothing dropped)."""
    from training.musicstats import PITCH, PITCH_DRUM

    n_note_tokens = int(np.isin(table.kind[np.asarray(bar_ids, dtype=np.int64)], (PITCH, PITCH_DRUM)).sum())
    try:
        score = vocab.decode(bar_ids)
    except Exception:  # MidiTok raises assorted errors on broken sequences
        return False
    return sum(len(track.notes) for track in score.tracks) == n_note_tokens


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


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
