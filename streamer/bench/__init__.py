"""`moodstream bench`: every real-time figure of one model measured in one run, with the goals checked.

    result = run_bench(BenchConfig(model_dir=..., quick=True))   # a flat dict (the --json keys)
    print(format_table(result))

Decode speed per context and against the seed-style baseline (`decode.py`), the streaming engine on the fake
and the real clock (`stream.py`), OSC control latency (`osc.py`), optional speed levers (`levers.py`), goals and
table (`report.py`).
Nothing here asserts a speed; the figures are only as quiet as the machine (its load is reported).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from model.errors import MoodstreamError
from streamer.bench.report import evaluate_goals, format_table, machine_info
from streamer.rt import RT_MODES, realtime_threads

log = logging.getLogger(__name__)

__all__ = ["BenchConfig", "run_bench", "format_table", "CONTEXTS", "HEADLINE_CONTEXT", "REQUIRED_KEYS"]

CONTEXTS = (128, 512, 1024)
HEADLINE_CONTEXT = 512  # decode_tok_s / decode_p50_ms / decode_p99_ms are the figures at this context
BASELINE_CONTEXT = 1024

# The --json contract (docs/CONTRACTS.md); run_bench returns these and more.
REQUIRED_KEYS = (
    "decode_tok_s", "decode_p50_ms", "decode_p99_ms",
    *(f"decode_{m}_{c}" for c in CONTEXTS for m in ("tok_s", "p50_ms", "p99_ms")),
    "baseline_speedup_1k", "rtf_dense_p99", "rtf_dense_p99_guided",
    "switch_on_time_rate", "switch_latency_ms_p50", "switch_latency_ms_p99",
    *(f"switch_latency_ms_{q}_{m}" for m in ("beat", "bar", "phrase4") for q in ("p50", "p99")),
    "send_error_p50_ms", "send_error_p99_ms", "underruns",
    "rss_growth_mb_per_hour", "peak_rss_mb",
    "device", "threads", "torch_version", "model_params", "machine",
)


@dataclass(frozen=True)
class BenchConfig:
    model_dir: Optional[Path] = None  # None: the bundled default model
    device: Optional[str] = None  # "cpu" | "cuda"; None: CUDA when present
    quick: bool = False  # short runs everywhere (a smoke test, not figures to quote)
    int8: bool = False  # run everything on the int8 dynamic-quantised model (CPU)
    stream_seconds: Optional[float] = None  # real-clock run; None: 60 s (quick: 15 s)
    simulated_minutes: Optional[float] = None  # fake-clock soak (memory, unguided RTF); None: 60 (quick: 2)
    guided_simulated_seconds: Optional[float] = None  # fake-clock run with guidance on; None: 400 (quick: 16)
    decode_tokens: Optional[int] = None  # timed steps per context; None: 500 (quick: 48)
    levers: bool = False  # also measure threads, int8, torch.compile, guidance batching, shapes
    bpe_data: Optional[Path] = None  # with levers: a built dataset to measure BPE tokens per bar on
    seed: int = 0
    rt_priority: str = "auto"  # the real-clock runs' scheduler (and bare timer) thread: "auto" | "off"

    def __post_init__(self):
        if self.device not in (None, "cpu", "cuda"):
            raise MoodstreamError(f"--device {self.device!r}: use cpu or cuda")
        for name in ("stream_seconds", "simulated_minutes", "guided_simulated_seconds", "decode_tokens"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                flag = "--" + name.replace("_", "-")
                raise MoodstreamError(f"{flag} {value!r} must be a positive number")
        if self.int8 and self.device == "cuda":
            raise MoodstreamError("--int8 is a CPU path; on CUDA the model runs in bf16 (drop --int8)")
        if self.seed < 0:
            raise MoodstreamError(f"--seed {self.seed} must be 0 or more")
        if self.rt_priority not in RT_MODES:
            raise MoodstreamError(f"--rt-priority {self.rt_priority!r}: use one of {', '.join(RT_MODES)}")

    def pick(self, name: str, full, quick):
        value = getattr(self, name)
        return value if value is not None else (quick if self.quick else full)


def _finite(value):
    """JSON has no NaN: None instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _load(config: BenchConfig):
    import torch

    from model.checkpoint import load_checkpoint
    from model.engine import default_device, prepare_for_decoding
    from model.paths import resolve_model_dir

    device = config.device or default_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise MoodstreamError("--device cuda: no CUDA GPU is available here; use --device cpu")
    directory = resolve_model_dir(config.model_dir)
    model, vocab, meta = load_checkpoint(directory, device="cpu")
    params = model.num_params()
    model = prepare_for_decoding(model, device, int8=config.int8)
    return model, vocab, directory, device, params


def run_bench(config: BenchConfig, progress=None) -> dict:
    """Run every measurement of `config` and return the flat result dict (NaN → None).
    `progress(stage: str)` is told each stage as it starts."""
    import torch

    from model.engine import Decoder
    from model.grammar import Grammar
    from model.vocab import Conditions
    from streamer.bench import decode, stream

    say = progress or (lambda stage: None)
    started = time.perf_counter()
    machine = machine_info()
    model, vocab, directory, device, params = _load(config)
    result: dict = {"model": str(directory), "device": device, "threads": torch.get_num_threads(),
                    "torch_version": torch.__version__, "model_params": params, "int8": config.int8,
                    "quick": config.quick, "python": sys.version.split()[0], **machine}
    n_tokens = config.pick("decode_tokens", 500, 48)

    # ---- decode speed per context, unguided and guided --------------------------------------------
    say("decode: the model's own stream")
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    decoder = Decoder(model, device=device)
    guided = Decoder(model, guidance=True, device=device, vocab=vocab)
    conditions = Conditions(vocab.genres[-1], vocab.moods[-1])
    own = decode.own_stream(decoder, vocab, grammar, conditions, min(max(CONTEXTS), decoder.capacity),
                            config.seed)
    contexts = []
    for c in CONTEXTS:
        say(f"decode at context {c}")
        plain = decode.decode_timing(decoder, grammar, own, c, n_tokens, seed=config.seed)
        with_guidance = decode.decode_timing(guided, grammar, own, c, n_tokens, guidance_w=stream.GUIDANCE_W,
                                             seed=config.seed)
        contexts.append(c)
        result.update({f"decode_context_{c}": plain.context, f"decode_tok_s_{c}": plain.tok_s,
                       f"decode_p50_ms_{c}": plain.p50_ms, f"decode_p99_ms_{c}": plain.p99_ms,
                       f"decode_guided_tok_s_{c}": with_guidance.tok_s,
                       f"decode_guided_p99_ms_{c}": with_guidance.p99_ms})
    result["contexts"] = contexts
    result.update({"decode_tok_s": result[f"decode_tok_s_{HEADLINE_CONTEXT}"],
                   "decode_p50_ms": result[f"decode_p50_ms_{HEADLINE_CONTEXT}"],
                   "decode_p99_ms": result[f"decode_p99_ms_{HEADLINE_CONTEXT}"],
                   "decode_headline_context": result[f"decode_context_{HEADLINE_CONTEXT}"]})

    # ---- the seed-style baseline at 1k context ------------------------------------------------------
    say("seed-style baseline")
    ours_context = result[f"decode_context_{BASELINE_CONTEXT}"]
    baseline = decode.baseline_tok_s(model.config, ours_context, 4 if config.quick else 16, device, config.seed)
    result.update({"baseline_context": ours_context, "baseline_tok_s": baseline,
                   "baseline_speedup_1k": result[f"decode_tok_s_{BASELINE_CONTEXT}"] / baseline})
    del decoder, guided

    # ---- fake clock: memory soak (unguided RTF from the same bars), then a guided run --------------
    minutes = config.pick("simulated_minutes", 60.0, 2.0)
    say(f"fake clock: {minutes:g} simulated minutes")
    soak = stream.simulated_run(model, vocab, minutes * 60.0, seed=config.seed,
                                progress=_sim_progress(say, minutes * 60.0))
    guided_s = config.pick("guided_simulated_seconds", 400.0, 16.0)
    say(f"fake clock, guidance on: {guided_s:g} simulated seconds")
    guided_run = stream.simulated_run(model, vocab, guided_s, seed=config.seed + 1, guidance_w=stream.GUIDANCE_W,
                                      switch_every_bars=0)
    dense, dense_g = stream.dense_bars(soak.bars), stream.dense_bars(guided_run.bars)
    rtfs = sorted(b.realtime_factor() for b in soak.bars)
    result.update({
        "rtf_dense_p99": stream.dense_rtf(soak.bars), "rtf_dense_p99_guided": stream.dense_rtf(guided_run.bars),
        "rtf_dense_min": stream.dense_rtf(soak.bars, worst=True),
        "rtf_dense_min_guided": stream.dense_rtf(guided_run.bars, worst=True),
        "rtf_bars": len(soak.bars), "rtf_bars_guided": len(guided_run.bars),
        "rtf_median": rtfs[len(rtfs) // 2] if rtfs else math.nan,
        "dense_tokens_per_bar": min((b.tokens for b in dense), default=math.nan),
        "dense_tokens_per_bar_guided": min((b.tokens for b in dense_g), default=math.nan),
        "tokens_per_bar_mean": sum(b.tokens for b in soak.bars) / max(1, len(soak.bars)),
        "simulated_minutes": soak.simulated_s / 60.0, "simulated_wall_s": soak.wall_s,
        "simulated_switches": soak.switches,
        "rss_growth_mb_per_hour": soak.rss_growth_mb_per_hour, "rss_warm_mb": soak.rss_warm_mb,
        "rss_end_mb": soak.rss_end_mb,
    })

    # ---- real clock: send error, underruns, switches -------------------------------------------------
    seconds = config.pick("stream_seconds", 60.0, 15.0)
    say("real clock: timer alone")
    timer = stream.timer_error(2.0 if config.quick else 5.0, rt_priority=config.rt_priority)
    say(f"real clock: {seconds:g} s of streaming with switches")
    live = stream.live_run(model, vocab, seconds, seed=config.seed, rt_priority=config.rt_priority)
    switches = stream.summarize_switches(live.switches)
    live_rtf = sorted(b.realtime_factor() for b in live.bars)
    result.update({
        "stream_s": live.seconds, "live_guidance_w": live.guidance_w, "send_error_p50_ms": live.send_error_p50_ms,
        "send_error_p99_ms": live.send_error_p99_ms, "send_error_max_ms": live.send_error_max_ms,
        "messages_sent": live.messages_sent, "late_messages": live.late_messages, "underruns": live.underruns,
        "timer_error_p50_ms": timer.p50_ms, "timer_error_p99_ms": timer.p99_ms, "timer_error_max_ms": timer.max_ms,
        "rt_priority": config.rt_priority, "realtime_priority": live.realtime_priority,
        "timer_realtime_priority": timer.realtime_priority,
        "switches_made": len(live.switches), "switches_counted": switches.counted,
        "switch_on_time_rate": switches.on_time_rate, "switch_lead_s_min": switches.lead_s_min,
        "switch_latency_ms_p50": switches.latency_ms_p50,
        "switch_latency_ms_p99": switches.latency_ms_p99,
        "switch_late": [{"lead_s": s.lead_s, "bar_line": s.bar_line, "applied_bar": s.applied_bar,
                         "sounded_bar": s.sounded_bar, "first_note_late_ms": s.first_note_late_ms}
                        for s in switches.late],
        "live_rtf_min": live_rtf[0] if live_rtf else math.nan, "live_bars": len(live.bars),
        "bars_played_while_written": live.played_while_written,
    })
    result.update(_switch_latency_by_mode(config, model, vocab, seconds, say))
    result.update(_osc_latency(config, model, vocab, say))

    result["peak_rss_mb"] = stream.peak_rss_mb()  # before the levers, which build other models

    # ---- levers (optional) -------------------------------------------------------------------------
    if config.levers:
        result["levers"] = _levers(config, model, vocab, device, n_tokens, say)
    result["realtime_threads_left"] = len(realtime_threads())  # 0: every real-time thread gave its priority back
    result["load_avg_1m_end"] = machine_info()["load_avg_1m"]
    result["bench_s"] = time.perf_counter() - started
    result["goals"] = evaluate_goals(result)
    return _finite(result)


SWITCH_MODES = ("beat", "bar", "phrase:4")  # switch latency is reported for each (docs/CONTRACTS.md)
MODE_MIN_LEAD_S = 0.05  # the per-mode runs' switches come at least this long before a bar line
MODE_MAX_S = 60.0  # and those runs last at most this long (phrase:4), half of it (beat, bar)


def _switch_latency_by_mode(config: BenchConfig, model, vocab, seconds: float, say) -> dict:
    """`switch_latency_ms_{p50,p99}_{beat,bar,phrase4}`: control change → first note under the new conditions,
    per `switch_at` mode, each from a real-clock run of its own (half as long as the main one, as long for
    phrase:4, whose switches wait up to 4 bars; at most `MODE_MAX_S`) whose switches come at uniformly random
    points of the bar (at least `MODE_MIN_LEAD_S` before its line), as a user's do. `switches_made_<mode>` says
    how many switches each figure rests on."""
    from streamer.bench import stream
    from streamer.controls import parse_switch_at

    out = {}
    for mode in SWITCH_MODES:
        key = mode.replace(":", "")
        run_s = min(seconds, MODE_MAX_S) / (1 if mode == "phrase:4" else 2)
        say(f"real clock: {run_s:g} s of streaming with switches at {mode}")
        live = stream.live_run(model, vocab, run_s, seed=config.seed, rt_priority=config.rt_priority,
                               switch_at=parse_switch_at(mode), min_lead_s=MODE_MIN_LEAD_S, anywhere=True)
        summary = stream.summarize_switches(live.switches, min_lead_s=MODE_MIN_LEAD_S)
        out.update({f"switch_latency_ms_p50_{key}": summary.latency_ms_p50,
                    f"switch_latency_ms_p99_{key}": summary.latency_ms_p99, f"switches_made_{key}": summary.counted})
    return out


def _osc_latency(config: BenchConfig, model, vocab, say) -> dict:
    """`osc_to_switch_ms_{p50,p99}` (an OSC message sent → the engine's switch decided),
    `osc_to_applied_ms_{p50,p99}` (→ its bar line) and `osc_to_sound_ms_{p50,p99}` (→ the first note under the
    new conditions), over `osc_switches` switches."""
    from streamer.bench.osc import osc_run

    count = 4 if config.quick else 12
    say(f"real clock: {count} switches sent over OSC")
    osc = osc_run(model, vocab, count, seed=config.seed, rt_priority=config.rt_priority)
    return {"osc_switches": osc.messages, "osc_switches_heard": osc.sounded,
            "osc_to_switch_ms_p50": osc.to_switch_ms_p50, "osc_to_switch_ms_p99": osc.to_switch_ms_p99,
            "osc_to_applied_ms_p50": osc.to_applied_ms_p50, "osc_to_applied_ms_p99": osc.to_applied_ms_p99,
            "osc_to_sound_ms_p50": osc.to_sound_ms_p50, "osc_to_sound_ms_p99": osc.to_sound_ms_p99}


def _sim_progress(say, total_s: float):
    marks = {"next": 0.1}

    def report(sim_s: float) -> None:
        if sim_s / total_s >= marks["next"]:
            say(f"fake clock: {sim_s / 60:.1f} of {total_s / 60:g} simulated minutes")
            marks["next"] += 0.1

    return report


def _levers(config: BenchConfig, model, vocab, device: str, n_tokens: int, say) -> dict:
    from streamer.bench import levers

    out: dict = {}
    context = HEADLINE_CONTEXT
    if device == "cpu" and not config.int8:
        say("lever: fused step")
        out["fused_step"] = levers.fused_step(model, vocab, context, n_tokens)
        say("lever: decode threads")
        out["threads"] = levers.threads(model, vocab, context, n_tokens, config.seed)
        say("lever: int8")
        out["int8"] = levers.int8(model, vocab, context, n_tokens, config.seed)
    if not config.int8:
        say("lever: torch.compile")
        try:
            out["compile"] = levers.compile_step(model, context, n_tokens)
        except Exception as err:  # a missing C++ compiler, an unsupported op: a figure, not a failure
            log.warning("torch.compile lever failed: %s", err)
            out["compile"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    say("lever: real-time priority, auto against off")
    out["rt_priority"] = levers.rt_priority(model, vocab, 15.0 if config.quick else 30.0,
                                            timer_s=2.0 if config.quick else 5.0, seed=config.seed)
    say("lever: guidance batching")
    out["guidance_batching"] = levers.guidance_batching(model, vocab, context, n_tokens)
    if device == "cpu":
        out["shapes"] = levers.shapes(vocab, context, max(32, n_tokens // 2), with_int8=True, seed=config.seed,
                                      progress=lambda s: say(f"lever: shape {s}"))
    if config.bpe_data is not None:
        say("lever: BPE tokens per bar")
        out["bpe"] = levers.bpe_tokens_per_bar(config.bpe_data, max_pieces=300 if config.quick else 1500,
                                               seed=config.seed)
    else:
        out["bpe"] = {"skipped": "pass --bpe-data DATASET_DIR (a built dataset) to measure BPE tokens per bar"}
    return out
