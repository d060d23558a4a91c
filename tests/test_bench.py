"""`moodstream bench`: the quick run emits every key of the JSON contract (no speed is asserted anywhere),
and the bench's own arithmetic — dense-bar selection, switch accounting, goals, the fused-step and static decode
step levers, BPE counting — is right on real components (tiny real model, real MidiTok)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.errors import MoodstreamError
from streamer.bench import REQUIRED_KEYS, BenchConfig
from streamer.bench.report import GOALS, evaluate_goals
from streamer.bench.stream import BarTiming, SwitchRecord, dense_bars, dense_rtf, summarize_switches

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_json(tiny_model_dir):
    """One real `moodstream bench --quick --json` run on the tiny model (real clock for 15 s)."""
    proc = subprocess.run([sys.executable, "-m", "streamer.cli", "bench", "--quick", "--json", "--model",
                           str(tiny_model_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {len(lines)}"
    return json.loads(lines[0])


def test_quick_json_has_every_contract_key(quick_json):
    missing = [key for key in REQUIRED_KEYS if key not in quick_json]
    assert not missing, f"missing keys: {missing}"


def test_quick_json_values_are_consistent(quick_json, tiny_model_dir):
    from model.checkpoint import load_checkpoint

    r = quick_json
    model, _, _ = load_checkpoint(tiny_model_dir)
    assert r["model_params"] == model.num_params()
    assert r["device"] == "cpu" and r["threads"] == 1 and r["torch_version"] == torch.__version__
    assert isinstance(r["machine"], str) and r["machine"]
    # the headline is the 512-token figure; contexts are capped at the tiny model's block_size (512)
    assert r["decode_tok_s"] == r["decode_tok_s_512"] and r["decode_p99_ms"] == r["decode_p99_ms_512"]
    assert r["decode_context_128"] == 128 and r["decode_context_1024"] == 512
    for c in (128, 512, 1024):
        assert r[f"decode_tok_s_{c}"] > 0
        assert 0 < r[f"decode_p50_ms_{c}"] <= r[f"decode_p99_ms_{c}"]
    assert r["baseline_context"] == r["decode_context_1024"]
    assert r["baseline_speedup_1k"] == pytest.approx(r["decode_tok_s_1024"] / r["baseline_tok_s"])
    assert r["rtf_dense_p99"] > 0 and r["rtf_dense_p99_guided"] > 0
    assert r["rtf_bars"] > 0 and r["rtf_bars_guided"] > 0
    assert isinstance(r["underruns"], int) and r["underruns"] >= 0
    assert 0 <= r["send_error_p50_ms"] <= r["send_error_p99_ms"]
    assert r["messages_sent"] > 0
    assert r["switches_made"] >= 1
    if r["switches_counted"]:
        assert 0.0 <= r["switch_on_time_rate"] <= 1.0
        assert r["switch_latency_ms_p50"] <= r["switch_latency_ms_p99"]
    for mode in ("beat", "bar", "phrase4"):  # switch latency per switch_at mode (None: no switch counted)
        if r[f"switches_made_{mode}"]:
            assert 0 < r[f"switch_latency_ms_p50_{mode}"] <= r[f"switch_latency_ms_p99_{mode}"]
    # OSC over real loopback UDP: every switch sent reached the engine, in well under a bar; the heard ones later
    assert r["osc_switches"] == 4 and r["osc_switches_heard"] >= 1
    assert 0 < r["osc_to_switch_ms_p50"] <= r["osc_to_switch_ms_p99"] < 1000
    assert r["osc_to_switch_ms_p50"] < r["osc_to_applied_ms_p50"] <= r["osc_to_applied_ms_p99"]
    assert r["osc_to_switch_ms_p50"] < r["osc_to_sound_ms_p50"] <= r["osc_to_sound_ms_p99"]
    assert r["peak_rss_mb"] >= r["rss_end_mb"] > 0
    assert set(r["goals"]) == {g.key for g in GOALS}
    # the bare timer and the stream ran at the same priority, and none was left at real-time priority
    assert r["rt_priority"] == "auto" and r["realtime_priority"] in ("fifo", "nice", "none")
    assert r["timer_realtime_priority"] == r["realtime_priority"]
    assert 0 <= r["timer_error_p50_ms"] <= r["timer_error_p99_ms"] <= r["timer_error_max_ms"]
    assert r["realtime_threads_left"] == 0


def test_rt_priority_lever_runs_auto_then_off_at_their_priorities(tiny_model_dir):
    """`--levers`' A/B of the scheduler thread's priority: each mode's timer and stream at its own priority,
    and no real-time thread left behind."""
    from streamer.bench.levers import rt_priority
    from streamer.engine import load_model
    from streamer.rt import realtime_threads

    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    ab = rt_priority(model, vocab, seconds=4.0, timer_s=0.2, rounds=1)
    assert set(ab) == {"auto", "off"}
    assert ab["off"]["realtime_priority"] in ("nice", "none")
    assert ab["auto"]["realtime_priority"] in ("fifo", "nice", "none")
    for figures in ab.values():
        assert figures["messages_sent"] > 0
        assert 0 <= figures["send_error_p50_ms"] <= figures["send_error_p99_ms"] <= figures["send_error_max_ms"]
        assert 0 <= figures["timer_error_p50_ms"] <= figures["timer_error_p99_ms"] <= figures["timer_error_max_ms"]
    assert realtime_threads() == []
    table = format_table_with_levers({"rt_priority": ab})
    assert "--rt-priority auto vs off" in table and "auto (" in table and "off  (" in table


def format_table_with_levers(levers: dict) -> str:
    from streamer.bench.report import _format_levers

    return "\n".join(_format_levers(levers))


def test_dense_bars_rank_by_tokens_per_beat_and_take_the_lowest_rtf():
    bars = [BarTiming(tokens=100, generate_s=0.1, length_beats=4.0) for _ in range(198)]
    bars.append(BarTiming(tokens=300, generate_s=0.25, length_beats=3.0))  # 100 tokens/beat: densest
    bars.append(BarTiming(tokens=380, generate_s=0.5, length_beats=4.0))  # 95 tokens/beat, more tokens
    assert dense_bars(bars) == [bars[-2], bars[-1]]  # 1 % of 200 bars = 2
    # 120 BPM: 3 beats = 1.5 s in 0.25 s → 6×; 4 beats = 2 s in 0.5 s → 4×
    assert dense_rtf(bars) == pytest.approx(5.0)  # the median of the two
    assert dense_rtf(bars, worst=True) == pytest.approx(4.0)
    assert dense_rtf(bars, bpm=60.0) == pytest.approx(10.0)
    assert dense_bars(bars[:3]) == [bars[0]]  # at least one bar
    assert math.isnan(dense_rtf([]))


def test_switch_summary_counts_only_early_switches_and_needs_bar_and_note_on_the_line():
    records = [
        SwitchRecord(1, lead_s=0.8, bar_line=4, applied_bar=4, sounded_bar=4, latency_ms=803.0, first_note_late_ms=3.0),
        SwitchRecord(2, lead_s=0.35, bar_line=7, applied_bar=8, sounded_bar=8, latency_ms=2400.0,
                     first_note_late_ms=0.0),  # deferred
        SwitchRecord(3, lead_s=1.2, bar_line=10, applied_bar=10, sounded_bar=11, latency_ms=3300.0,
                     first_note_late_ms=0.0),  # the bar at the line had no note
        SwitchRecord(4, lead_s=0.1, bar_line=13, applied_bar=14, sounded_bar=14, latency_ms=2100.0,
                     first_note_late_ms=0.0),  # too close to the line to count
        SwitchRecord(5, lead_s=0.5, bar_line=16, applied_bar=16, sounded_bar=16, latency_ms=560.0,
                     first_note_late_ms=60.0),  # its first note went 60 ms late
    ]
    summary = summarize_switches(records)
    assert summary.counted == 4 and summary.on_time == 1
    assert summary.on_time_rate == pytest.approx(1 / 4)
    assert summary.latency_ms_p50 == pytest.approx((803.0 + 2400.0) / 2)
    assert [s.switch_id for s in summary.late] == [2, 3, 5]
    assert summary.lead_s_min == pytest.approx(0.35)


def test_rss_growth_is_the_trend_of_the_minute_samples_not_the_last_one():
    """One allocation caught at the last sample must not read as an hour's growth; without samples (a run too
    short for three) the two end points give it."""
    from streamer.bench.stream import SimulatedResult

    flat_then_spike = tuple((60.0 * m, 300.0 + (0.01 * m if m < 30 else 8.0)) for m in range(6, 31))
    run = SimulatedResult((), 1800.0, 1.0, 0, 300.06, 308.0, 360.0, False, flat_then_spike)
    assert run.rss_growth_mb_per_hour < 0.5 * (308.0 - 300.06) / (1440.0 / 3600.0)
    rising = tuple((60.0 * m, 300.0 + 0.1 * m) for m in range(6, 31))  # 0.1 MB a minute = 6 MB an hour
    assert SimulatedResult((), 1800.0, 1.0, 0, 300.6, 303.0, 360.0, False, rising).rss_growth_mb_per_hour == \
        pytest.approx(6.0)
    assert SimulatedResult((), 3600.0, 1.0, 0, 300.0, 302.0, 360.0, False).rss_growth_mb_per_hour == \
        pytest.approx(2.0 / 0.9)


def test_goals_pass_miss_and_missing_values():
    result = {"device": "cpu", "rtf_dense_p99": 4.0, "rtf_dense_p99_guided": 3.9, "decode_p99_ms": 3.5,
              "baseline_speedup_1k": 25.0, "switch_on_time_rate": None, "send_error_p99_ms": 1.0, "underruns": 0,
              "rss_growth_mb_per_hour": 5.0}
    goals = evaluate_goals(result)
    assert {k: g["pass"] for k, g in goals.items()} == {
        "rtf_dense_p99": True, "rtf_dense_p99_guided": False, "decode_p99_ms": False, "baseline_speedup_1k": True,
        "switch_on_time_rate": None, "send_error_p99_ms": True, "underruns": True, "rss_growth_mb_per_hour": True}
    cuda = evaluate_goals({**result, "device": "cuda", "rtf_dense_p99": 40.0})
    assert cuda["rtf_dense_p99"]["pass"] is False and cuda["rtf_dense_p99"]["goal"] == "≥ 50"


def test_static_decode_step_gives_the_decoders_logits(tiny_model_dir):
    """The torch.compile lever times `StaticDecodeStep`; it must compute what `Decoder` computes."""
    from model.checkpoint import load_checkpoint
    from model.engine import Decoder
    from streamer.bench.levers import StaticDecodeStep

    torch.set_num_threads(1)
    model, vocab, _ = load_checkpoint(tiny_model_dir)
    ids = torch.randint(0, vocab.vocab_size, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    decoder = Decoder(model)
    step = StaticDecodeStep(model).eval()
    with torch.inference_mode():
        expected = [decoder.prefill(ids[:1])] + [decoder.decode_one(t) for t in ids[1:]]
        got = [step(torch.tensor([[t]]), torch.tensor([p]))[0] for p, t in enumerate(ids)]
    for p, (a, b) in enumerate(zip(expected, got)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=f"position {p}")


def test_fused_step_lever_reports_both_paths_at_both_batch_sizes(tiny_model_dir):
    from model.checkpoint import load_checkpoint
    from streamer.bench.levers import fused_step

    torch.set_num_threads(1)
    model, vocab, _ = load_checkpoint(tiny_model_dir)
    result = fused_step(model, vocab, context=100, n_tokens=32, rounds=2)
    for label in ("", "_guided"):
        fused, forward = result[f"step_p50_ms_fused{label}"], result[f"step_p50_ms_forward{label}"]
        assert fused > 0 and forward > 0
        assert result[f"speedup_fused{label}"] == pytest.approx(forward / fused)


def test_decode_timing_caps_context_and_times_the_asked_steps(tiny_model_dir):
    from model.checkpoint import load_checkpoint
    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions
    from streamer.bench.decode import decode_timing, own_stream

    torch.set_num_threads(1)
    model, vocab, _ = load_checkpoint(tiny_model_dir)
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    decoder = Decoder(model)
    stream = own_stream(decoder, vocab, grammar, Conditions("jazz", "calm"), 512, seed=1)
    assert len(stream) == 512 and stream[:2] == vocab.condition_ids(Conditions("jazz", "calm"))
    grammar.check(stream)  # the model's own output is grammatical
    timing = decode_timing(decoder, grammar, stream, 1024, 40)
    assert timing.context == 512 and timing.tokens == 40 and not timing.guidance
    short = decode_timing(decoder, grammar, stream, 32, 40)  # windows of 16 repeat until 40 are timed
    assert short.context == 32 and short.tokens == 40


def test_bpe_tokens_per_bar_never_exceed_remi(tmp_path, shared_data):
    from streamer.bench.levers import bpe_tokens_per_bar
    from training.build import BuildConfig, build

    build(BuildConfig(out_dir=tmp_path / "ds", sources=("emopia", "nottingham"), data_root=shared_data,
                      workers=1, limit=6, chunk_size=6, progress=False))
    result = bpe_tokens_per_bar(tmp_path / "ds", vocab_sizes=(700,), max_pieces=50)
    remi, bpe = result["remi"], result["bpe_700"]
    assert remi["bars"] == bpe["bars"] > 0
    assert bpe["mean"] < remi["mean"] and bpe["max"] <= remi["max"]


def test_config_and_cli_errors_are_one_line(tiny_model_dir, tmp_path):
    with pytest.raises(MoodstreamError, match="--stream-seconds"):
        BenchConfig(stream_seconds=0)
    with pytest.raises(MoodstreamError, match="int8"):
        BenchConfig(device="cuda", int8=True)
    proc = subprocess.run([sys.executable, "-m", "streamer.cli", "bench", "--model", str(tiny_model_dir),
                           "--bpe-data", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "--levers" in proc.stderr
