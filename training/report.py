"""The report of `moodstream evaluate`: report.json, report.md and the PNG plots (each file written under a
temporary name first, then renamed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STATS_PNG = "music_stats.png"
CONFUSION_PNG = "confusion.png"
ADHERENCE_PNG = "adherence.png"
SEAM_PNG = "switch_seam.png"
INSTRUMENT_FAMILY = "instrument_family"  # music_stat_distance's key for the instrument-family mix distance

def json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text(path: Path, text: str) -> None:
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


def seam_example(streams) -> tuple | None:
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
