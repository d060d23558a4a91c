"""`moodstream evaluate` end to end on a tiny real manifest with a tiny real model, plus the pieces it
rests on: the scored tokens, sliding-window likelihoods, streams written by the streaming generator with
live switches, and the switch judge (generated and spliced real music)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from streamer.cli import main
from training.evaluate import RATE_KEYS
from training.likelihood import model_token_logprobs, scored_positions
from training.scoring import bar_decodes_cleanly
from training.switching import ADHERENCE_BARS, PlannedSwitch, StreamPlan, real_splices, switch_plan, write_stream

FIELDS = ["path", "source", "style", "mood", "valence", "arousal", "kind", "group", "split"]
SAMPLING = {"guidance_w": 1.5, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_tokens_per_bar": 512}


@pytest.fixture(scope="module")
def tiny_manifest(shared_data, tmp_path_factory):
    """A handful of real files (folk, pop piano with human moods, funk drums) copied beside a manifest."""
    rows = list(csv.DictReader((shared_data / "manifest.csv").open()))
    wanted = {("train", "Nottingham"): 12, ("train", "EMOPIA"): 24, ("train", "GrooveMIDI"): 12,
              ("validation", "Nottingham"): 3, ("validation", "EMOPIA"): 4, ("validation", "GrooveMIDI"): 3}
    chosen = []
    for (split, source), n in wanted.items():
        picked = [r for r in rows if r["split"] == split and r["source"] == source
                  and (source != "GrooveMIDI" or r["style"] == "funk")]
        if source == "EMOPIA":  # every quadrant
            by_mood = [[r for r in picked if r["mood"] == m] for m in ("happy", "tense", "sad", "calm")]
            picked = [r for group in zip(*by_mood) for r in group]
        chosen += picked[:n]
    root = tmp_path_factory.mktemp("tiny_manifest")
    for row in chosen:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / row["path"], root / row["path"])
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in chosen)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from model.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    return load_checkpoint(tiny_model_dir)


def _check_report(report: dict, out_dir, n_pairs: int = 12):
    for key in ("nll_per_token", "ngram_nll_per_token"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    for key in RATE_KEYS:
        assert report[key] is not None and 0.0 <= report[key] <= 1.0, key
    assert set(report["music_stat_distance"]) == {"pitch_class_entropy", "polyphony", "notes_per_bar",
                                                  "empty_beat_rate", "groove_consistency", "drum_share",
                                                  "instrument_family"}
    assert 0.0 <= report["music_stat_distance"]["instrument_family"] <= 1.0
    assert report["per_genre"] and all(
        set(g) == {"classifier_acc_real", "generated_acc", "generated_vs_real", "music_stat_distance",
                   "instrument_family_distance"} for g in report["per_genre"].values())
    assert "generated_genre_acc_per_genre" in report["goals"]
    for name, value in report["music_stat_distance"].items():
        assert value is not None and math.isfinite(value) and value >= 0, name
    assert report["elapsed_s"] > 0
    # the grammar guarantees syntax; a random model still writes bars that decode note for note
    assert report["syntax_valid_bar_rate"] == 1.0
    # every genre × mood pair of the training labels (3 × 4 in the tiny manifest) is judged
    assert len(report["details"]["generation"]["pairs"]) == n_pairs
    for axis in ("genre", "mood"):
        assert 0.0 <= report[f"switch_ceiling_{axis}"] <= 1.0, axis
        assert report[f"switch_success_vs_ceiling_{axis}"] is None or report[f"switch_success_vs_ceiling_{axis}"] >= 0
        for key in ("adherence_after_switch", "adherence_ceiling"):
            assert len(report[key][axis]) == ADHERENCE_BARS
        assert report["details"]["switches"]["generated"][axis]["switches"] > 0
    assert report["switch_success_se"] is None or 0 <= report["switch_success_se"] <= 0.5
    assert set(report["goals"]) >= {"switch_success_vs_ceiling_genre", "adherence_after_switch_1_mood"}
    for name in ("report.json", "report.md", "music_stats.png", "confusion.png", "adherence.png",
                 "switch_seam.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert not list(out_dir.glob("*.tmp*"))
    md = (out_dir / "report.md").read_text()
    assert "scored" in md and "Wasserstein" in md


def test_evaluate_end_to_end_on_a_tiny_manifest(tiny_manifest, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tiny_manifest), "--out", str(out),
                 "--bars-per-pair", "2", "--switches-per-stream", "2", "--ceiling-splices", "40", "--json", "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert printed["nll_per_token"] == report["nll_per_token"]
    _check_report(report, out)
    # a random model is no better than the trigram fitted on the train rows
    assert report["nll_per_token"] > report["ngram_nll_per_token"]
    assert report["pieces"] == 10
    # no classifier beside the model: one was trained on the manifest's train rows, saved with the report
    assert "train rows" in report["details"]["classifier"]["source"]
    assert (out / "classifier" / "model.safetensors").is_file()
    assert not (tiny_model_dir / "classifier").exists()


def test_evaluate_uses_the_classifier_beside_the_model(tiny_manifest, tiny_model_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    code = main(["evaluate", "--train-classifier", "--model", str(model_dir), "--data", str(tiny_manifest),
                 "--classifier-epochs", "5", "--quiet"])
    assert code == 0
    assert (model_dir / "classifier" / "model.json").is_file()
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tiny_manifest), "--out", str(out),
                 "--bars-per-pair", "1", "--switches-per-stream", "1", "--guidance", "2",
                 "--switch-context", "0", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["details"]["classifier"]["source"] == str(model_dir / "classifier")
    assert report["settings"]["guidance_w"] == 2.0  # a guided decoder (two rows per step)
    assert report["settings"]["switch_context_bars"] == 0
    _check_report(report, out)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A real dataset built by `moodstream dataset build` from 12 pieces per source."""
    out = tmp_path_factory.mktemp("tiny_dataset") / "dataset"
    assert main(["dataset", "build", "--sources", "emopia,nottingham,groove", "--out", str(out), "--limit", "12",
                 "--workers", "1", "--no-progress"]) == 0
    return out


def test_evaluate_on_a_built_dataset(tiny_dataset, tmp_path, capsys):
    from model.checkpoint import save_checkpoint
    from model.gpt import GPT, GPTConfig
    from model.vocab import Vocab
    from training.dataset import TokenDataset

    vocab = Vocab.load(tiny_dataset / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.vocab_size, n_layer=2, n_head=2, n_embd=64, block_size=512))
    model_dir = save_checkpoint(tmp_path / "model", model, vocab, {"dataset": str(tiny_dataset)})
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tiny_dataset), "--out", str(out),
                 "--bars-per-pair", "1", "--switches-per-stream", "1", "--quiet"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    data = TokenDataset(tiny_dataset)
    assert report["data_kind"] == "dataset"
    assert report["pieces"] == len(data.pieces("validation"))
    # no classifier yet: trained on the model's own dataset (train split) and kept beside the model
    assert "trained now on" in report["details"]["classifier"]["source"]
    assert (model_dir / "classifier" / "model.safetensors").is_file()
    train_genres = {r["genre"] for r in data.pieces("train")} - {"any"}
    train_moods = {r["mood"] for r in data.pieces("train")} - {"any"}
    assert set(report["details"]["classifier"]["genres"]) == train_genres
    assert "train split" in report["details"]["ngram_train"]
    _check_report(report, out, n_pairs=len(train_genres) * len(train_moods))


def test_evaluate_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,split\na.mid,validation\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing column" in err[0] and "style" in err[0]
    bad.write_text("path,style,mood,split\nnot/here.mid,folk,,validation\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not/here.mid" in err[0]
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tmp_path / "nothing")]) == 1
    assert "nothing" in capsys.readouterr().err
    for flag, value, message in (("--switch-context", "some", "use a whole number of bars"),
                                 ("--switch-boost", "3", "write W:BARS"), ("--switch-boost", "2:0", "BARS at least 1")):
        assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), flag, value]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_condition_tokens_are_context_never_scored(vocab, shared_data):
    from model.vocab import Conditions

    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "happy"))
    ids = ids[:50] + vocab.condition_ids(Conditions("pop", "sad")) + ids[50:100]
    positions = scored_positions(vocab, ids)
    assert 0 not in positions and 1 not in positions
    assert not any(vocab.is_condition(ids[p]) for p in positions)
    assert len(positions) == len(ids) - 4


def test_sliding_windows_match_the_full_context_where_it_fits(tiny, vocab, shared_data):
    from model.gpt import GPT, GPTConfig
    from model.vocab import Conditions

    model, _, _ = tiny
    short = GPT(GPTConfig(**{**model.config.to_dict(), "block_size": 128}))
    short.load_state_dict(model.state_dict())
    short.eval()
    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "happy"))[:400]
    full = model_token_logprobs(model, vocab, ids, "cpu")
    slid = model_token_logprobs(short, vocab, ids, "cpu")
    assert full.shape == slid.shape == (399,)
    assert np.allclose(full[:127], slid[:127], atol=1e-4)  # the first window sees the same context
    assert np.all(np.isfinite(slid)) and np.all(slid < 0)
    assert not np.allclose(full[200:], slid[200:])  # later tokens see less context in 128-token windows


def test_a_bar_conditioned_model_is_scored_on_the_piece_read_with_a_block_before_every_bar(tiny, vocab,
                                                                                            shared_data):
    from training.likelihood import bar_conditioned_logprobs

    from model.vocab import Conditions

    model, _, _ = tiny
    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "happy"))[:300]
    block = ids[:2]
    expanded, where = [], []
    for token in ids:
        if token == vocab.bar_id and len(expanded) > 2:
            expanded += block
        where.append(len(expanded))
        expanded.append(token)
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([expanded]))[0][0].float(), dim=-1)
    got = bar_conditioned_logprobs(model, vocab, ids, "cpu")
    assert got.shape == (len(ids) - 1,)
    bars = [t for t in range(3, len(ids)) if ids[t] == vocab.bar_id]
    assert len(bars) >= 3
    for t in range(1, len(ids)):
        e = where[t]
        # a Bar after music: the model's own end-of-bar guess, made at the bar's last token, before the block
        row, target = (e - 3, vocab.bar_id) if t in bars else (e - 1, ids[t])
        assert abs(got[t - 1] - logp[row, target].item()) < 1e-4, t


def test_written_streams_switch_live_at_the_bar_and_are_seeded(tiny, vocab):
    """A planned switch goes through the live request: the bars written ahead are thrown away and the
    generator rolls back; the bar at the switch carries the new block; the same seed gives the same stream."""
    from model.grammar import Grammar
    from model.vocab import Conditions
    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig
    from training.musicstats import TokenTable

    model, _, _ = tiny
    start, target = Conditions("folk", "happy"), Conditions("pop", "happy")
    config = GeneratorConfig(max_bar_tokens=120)

    def run(seed, lookahead=1):
        plan = StreamPlan(start, (PlannedSwitch(2, target, "genre"),), 5, seed)
        return write_stream(model, vocab, plan, Controls(guidance_w=1.5), config, lookahead_bars=lookahead)

    stream = run(3)
    assert [b.seq for b in stream.bars] == list(range(5))
    assert stream.conditions == [start, start, target, target, target]
    assert [vocab.conditions_at_bar(stream.ids, b) for b in range(5)] == stream.conditions
    assert list(stream.bars[2].tokens[:3]) == vocab.condition_ids(target) + [vocab.bar_id]
    assert stream.rollbacks == 1  # bars 2 and 3 were written under the old conditions, then thrown away
    Grammar(vocab).check(stream.ids)
    table = TokenTable.from_vocab(vocab)
    assert all(bar_decodes_cleanly(vocab, table, vocab.strip_conditions(b.tokens)) for b in stream.bars)
    assert run(3).ids == stream.ids  # seeded, whatever the threads' timing
    assert run(4).ids != stream.ids


def test_switch_context_zero_writes_what_a_fresh_stream_writes(tiny, vocab):
    """With no old bars kept, the bars after a switch are those of a stream that starts on the new conditions
    (greedy sampling, so the RNG plays no part); keeping the old bars changes them."""
    from model.vocab import Conditions
    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig

    model, _, _ = tiny
    old, new = Conditions("funk", "tense"), Conditions("folk", "tense")
    greedy = Controls(temperature=0.0, guidance_w=1.5)

    def run(plan, context):
        config = GeneratorConfig(max_bar_tokens=100, switch_context_bars=context)
        return [b.tokens for b in write_stream(model, vocab, plan, greedy, config).bars]

    switched = StreamPlan(old, (PlannedSwitch(3, new, "genre"),), 6, 0)
    fresh = run(StreamPlan(new, (), 3, 0), None)
    assert run(switched, 0)[3:] == fresh
    # a random model's greedy bars hardly depend on context: some switch among a few shows the old bars' pull
    changed = 0
    for before, after in ((old, new), (Conditions("rock", "sad"), Conditions("jazz", "sad")),
                          (Conditions("pop", "happy"), Conditions("pop", "calm"))):
        plan = StreamPlan(before, (PlannedSwitch(3, after, "genre" if before.mood == after.mood else "mood"),), 6, 0)
        changed += run(plan, None)[3:] != run(StreamPlan(after, (), 3, 0), None)
    assert changed >= 1


def test_switch_guidance_options_change_only_the_bars_they_govern(tiny, vocab):
    """The old conditions as the negative row, or a boosted weight for the first bars of a switch, change the
    music from the switch on and nothing before it; a boost equal to the controls' weight changes nothing."""
    from model.vocab import Conditions
    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig

    model, _, _ = tiny
    plan = StreamPlan(Conditions("funk", "tense"), (PlannedSwitch(2, Conditions("funk", "happy"), "mood"),), 5, 1)

    def bars(**options):
        config = GeneratorConfig(max_bar_tokens=100, **options)
        return [b.tokens for b in write_stream(model, vocab, plan, Controls(guidance_w=1.5), config).bars]

    plain = bars()
    for options in ({"switch_negative": "old"}, {"switch_guidance_w": 4.0, "switch_boost_bars": 1}):
        other = bars(**options)
        assert other[:2] == plain[:2] and other[2:] != plain[2:], options
    assert bars(switch_guidance_w=1.5) == plain


def test_an_opposite_mood_negative_changes_guided_music_only(tiny, vocab):
    """`mood_negative="opposite"` changes what the guidance row reads, so guided music changes from the first
    bar; without guidance there is no second row and the music stays as it was."""
    from model.vocab import Conditions
    from streamer.controls import Controls
    from streamer.generator import GeneratorConfig

    model, _, _ = tiny
    plan = StreamPlan(Conditions("funk", "tense"), (), 3, 1)

    def bars(w, negative):
        config = GeneratorConfig(max_bar_tokens=100, mood_negative=negative)
        return [b.tokens for b in write_stream(model, vocab, plan, Controls(guidance_w=w), config).bars]

    assert bars(2.0, "opposite")[0] != bars(2.0, "null")[0]
    assert bars(1.0, "opposite") == bars(1.0, "null")
    with pytest.raises(ValueError, match="mood_negative"):
        GeneratorConfig(mood_negative="sad")


def test_switch_plan_changes_one_axis_at_a_time_to_another_value():
    plans = switch_plan(["pop", "folk", "funk"], ["happy", "sad"], first_bar=4, switches_per_stream=3, spacing=8,
                        streams_per_pair=2, seed=0)
    assert len(plans) == 12 and len({p.seed for p in plans}) == 12
    assert [(p.start.genre, p.start.mood) for p in plans[:6]] == [(g, m) for g in ("pop", "folk", "funk")
                                                                  for m in ("happy", "sad")]
    axes = []
    for plan in plans:
        assert plan.n_bars == 4 + 3 * 8 and [s.at_bar for s in plan.switches] == [4, 12, 20]
        current = plan.start
        for switch in plan.switches:
            changed = [a for a in ("genre", "mood") if getattr(switch.conditions, a) != getattr(current, a)]
            assert changed == [switch.axis]
            axes.append(switch.axis)
            current = switch.conditions
    assert axes.count("genre") == axes.count("mood")


def test_the_judge_scores_real_splices_by_the_axis_that_changed(vocab, shared_data):
    """Spliced real pieces are judged bar by bar, on the axis that changed, against the second piece's label."""
    from model.vocab import Conditions
    from training.pieces import LabelledPiece

    def piece(name, path, genre, mood):
        ids = np.asarray(vocab.encode(shared_data / path, Conditions(genre, mood)))
        return LabelledPiece(name, ids, genre, mood, "human", "validation")

    pieces = [piece("a", "nottingham/jigs107.mid", "folk", "happy"),
              piece("b", "nottingham/ashover1.mid", "folk", "sad"),
              piece("c", "pop909/001/001.mid", "pop", "happy")]

    class Fixed:  # a classifier that answers every window with one label
        genres, moods = ("folk", "pop"), ("happy", "sad")

        def __init__(self, answer):
            self.answer = answer

        def prepare(self, ids):
            from training.classifier import Featurizer, FeatureSpec
            from training.musicstats import TokenTable

            table = TokenTable.from_vocab(vocab)
            return Featurizer(table, FeatureSpec(vocab_size=len(table))).prepare(ids)

        def classify(self, view, windows):
            return [self.answer for _ in windows]

    always = real_splices(Fixed(("pop", "sad")), vocab, pieces, per_axis=3, before_bars=4, seed=0)
    assert always["genre"].summary()["switches"] == 2  # folk/happy → pop/happy and back: the only genre pairs
    assert always["mood"].summary()["switches"] == 2  # folk/happy ↔ folk/sad
    # one mood splice goes into "sad" (every bar a hit), the other into "happy" (none); likewise for genre
    for axis in ("genre", "mood"):
        assert sorted(row.tolist() for row in always[axis].rows) == [[0.0] * ADHERENCE_BARS, [1.0] * ADHERENCE_BARS]
        assert always[axis].summary()["rate"] == 0.5 and always[axis].summary()["curve"] == [0.5] * ADHERENCE_BARS
    never = real_splices(Fixed(("rock", "calm")), vocab, pieces, per_axis=3, before_bars=4, seed=0)
    assert never["genre"].summary()["rate"] == never["mood"].summary()["rate"] == 0.0


def test_a_bar_out_of_its_piece_keeps_its_tempo(vocab, shared_data):
    from model.vocab import Conditions
    from training.musicstats import TEMPO, TIME_SIG, TokenTable
    from training.windows import restate_tempo

    kind = TokenTable.from_vocab(vocab).kind

    def with_tempo(bar, tempo_id):
        return restate_tempo(bar, tempo_id, vocab.token_to_id["Position_0"], kind == TEMPO, kind == TIME_SIG)

    ids = vocab.encode(shared_data / "nottingham" / "jigs107.mid", Conditions("folk", "calm"))
    bars = [vocab.strip_conditions(b) for b in vocab.split_bars(ids)]
    tempo = next(t for t in bars[0] if vocab.id_to_token[t].startswith("Tempo_"))
    later = next(b for b in bars[1:] if not any(vocab.id_to_token[t].startswith("Tempo_") for t in b))
    restated = with_tempo(later, tempo)
    assert vocab.tokens(restated[:4])[2:] == ["Position_0", vocab.id_to_token[tempo]]
    assert vocab.strip_conditions(restated) == restated and len(restated) in (len(later) + 1, len(later) + 2)
    assert with_tempo(bars[0], tempo) == bars[0]  # states its own tempo already


def test_ngram_from_takes_a_datasets_training_split_and_refuses_anything_else(tiny_dataset, tmp_path):
    from model.errors import MoodstreamError
    from model.vocab import Vocab
    from training.dataset import TokenDataset
    from training.evaluate import ngram_pieces

    vocab = Vocab.load(tiny_dataset / "tokenizer.json")
    pieces, source = ngram_pieces(tiny_dataset, vocab)
    assert len(pieces) == len(TokenDataset(tiny_dataset).pieces("train")) > 0
    assert "--ngram-from" in source and {p.split for p in pieces} == {"train"}
    with pytest.raises(MoodstreamError, match="not a built dataset"):
        ngram_pieces(tmp_path, vocab)
    with pytest.raises(MoodstreamError, match="differs from the model's vocabulary"):
        ngram_pieces(tiny_dataset, Vocab.create(genres=("pop", "rock")))
