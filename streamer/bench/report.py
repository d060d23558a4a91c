"""The bench's goals, the machine it ran on, and the printed table (pure functions over the result dict)."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Goal:
    key: str
    op: str  # ">=" or "<="
    target: float
    note: str = ""  # printed after the verdict

    def check(self, value) -> Optional[bool]:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value >= self.target if self.op == ">=" else value <= self.target

    def text(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.target:g}"


GOALS = (
    Goal("rtf_dense_p99", ">=", 4.0),
    Goal("rtf_dense_p99_guided", ">=", 4.0),
    Goal("decode_p99_ms", "<=", 3.0),
    Goal("baseline_speedup_1k", ">=", 20.0),
    Goal("switch_on_time_rate", ">=", 1.0),
    Goal("send_error_p99_ms", "<=", 2.0),
    Goal("underruns", "<=", 0.0, note="(the goal is for a 10-minute run: --stream-seconds 600)"),
    Goal("rss_growth_mb_per_hour", "<=", 5.0),
)
CUDA_RTF_GOAL = 50.0  # on a CUDA GPU, batch 1


def goals_for(device: str) -> tuple[Goal, ...]:
    if device != "cuda":
        return GOALS
    return tuple(Goal(g.key, g.op, CUDA_RTF_GOAL, g.note) if g.key.startswith("rtf_dense") else g for g in GOALS)


def evaluate_goals(result: dict) -> dict:
    """{key: {"goal": "≥ 4", "value": v, "pass": True/False/None}} for every goal."""
    out = {}
    for goal in goals_for(result.get("device", "cpu")):
        value = result.get(goal.key)
        out[goal.key] = {"goal": goal.text(), "value": value, "pass": goal.check(value), "note": goal.note}
    return out


def machine_info() -> dict:
    """CPU model, logical cores, load average (the bench is only as quiet as the machine)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"cpu_model": cpu, "cpu_cores": cores, "machine": f"{cpu}, {cores} cores", "load_avg_1m": load}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _priority_text(mode) -> str:
    """A thread's `realtime_priority` in words."""
    return {"fifo": "at real-time priority (SCHED_FIFO)", "nice": "at nice -10 (no real-time priority)",
            "none": "at ordinary priority"}.get(mode, "at an unknown priority")


def format_table(result: dict) -> str:
    """The human-readable report: setup, decode speed per context, streaming figures, goals, levers."""
    r = result
    lines = [
        f"moodstream bench — {r['machine']} (load {_fmt(r.get('load_avg_1m'))} at start), device {r['device']}, "
        f"{r['threads']} torch thread(s), torch {r['torch_version']}",
        f"model: {r['model']} ({r['model_params']:,} parameters{', int8' if r.get('int8') else ''}); "
        f"{'quick run' if r.get('quick') else 'full run'}, {r['bench_s']:.0f} s",
        "",
        "decode, batch 1 (grammar mask + sampling + model step; context = tokens in the cache)",
        f"  {'context':>8} {'tok/s':>9} {'p50 ms':>8} {'p99 ms':>8}   {'guided tok/s':>12} {'p99 ms':>8}",
    ]
    for c in r["contexts"]:
        shown = str(c) if r[f"decode_context_{c}"] == c else f"{r[f'decode_context_{c}']}*"
        lines.append(f"  {shown:>8} {_fmt(r[f'decode_tok_s_{c}'], 0):>9} "
                     f"{_fmt(r[f'decode_p50_ms_{c}']):>8} {_fmt(r[f'decode_p99_ms_{c}']):>8}   "
                     f"{_fmt(r[f'decode_guided_tok_s_{c}'], 0):>12} {_fmt(r[f'decode_guided_p99_ms_{c}']):>8}")
    if any(r[f"decode_context_{c}"] != c for c in r["contexts"]):
        lines.append("  * capped at the model's block_size")
    lines += [
        f"  seed-style baseline (TransformerEncoder, full recompute) at {r['baseline_context']}: "
        f"{_fmt(r['baseline_tok_s'], 1)} tok/s → ours is {_fmt(r['baseline_speedup_1k'], 0)}× faster",
        "",
        "streaming at 120 BPM, fake clock (real-time factor: median over the densest 1 % of bars by tokens per beat)",
        f"  unguided: {_fmt(r['rtf_dense_p99'])}× real time (lowest {_fmt(r['rtf_dense_min'])}×) over "
        f"{r['rtf_bars']} bars (densest ≥ {_fmt(r['dense_tokens_per_bar'], 0)} tokens/bar; all bars: median "
        f"{_fmt(r['rtf_median'])}×, {_fmt(r['tokens_per_bar_mean'], 0)} tokens/bar on average)",
        f"  guided:   {_fmt(r['rtf_dense_p99_guided'])}× real time (lowest {_fmt(r['rtf_dense_min_guided'])}×) over "
        f"{r['rtf_bars_guided']} bars (densest ≥ {_fmt(r['dense_tokens_per_bar_guided'], 0)} tokens/bar)",
        f"  real clock, {r['stream_s']:.0f} s (guidance {_fmt(r.get('live_guidance_w'), 1)}; scheduler thread "
        f"{_priority_text(r.get('realtime_priority'))}, --rt-priority {r.get('rt_priority', 'auto')}): send error "
        f"p50 {_fmt(r['send_error_p50_ms'])} ms, p99 "
        f"{_fmt(r['send_error_p99_ms'])} ms, max {_fmt(r['send_error_max_ms'])} ms over {r['messages_sent']:,} "
        f"messages; underruns {r['underruns']}; bars that started while still being written "
        f"{r.get('bars_played_while_written', 0)}",
        f"  timer alone (thread {_priority_text(r.get('timer_realtime_priority'))}): late p50 "
        f"{_fmt(r['timer_error_p50_ms'])} ms, p99 {_fmt(r['timer_error_p99_ms'])} ms, max "
        f"{_fmt(r.get('timer_error_max_ms'))} ms",
        f"  switches ≥ 300 ms before a bar line: {r['switches_counted']} (closest {_fmt(r['switch_lead_s_min'])} s), "
        f"on time {_fmt(r['switch_on_time_rate'])}; "
        f"latency p50 {_fmt(r['switch_latency_ms_p50'], 0)} ms, p99 {_fmt(r['switch_latency_ms_p99'], 0)} ms",
        "  switch latency by switch_at (request → first note): " + "; ".join(
            f"{mode} p50 {_fmt(r.get(f'switch_latency_ms_p50_{key}'), 0)} ms, p99 "
            f"{_fmt(r.get(f'switch_latency_ms_p99_{key}'), 0)} ms ({r.get(f'switches_made_{key}', 0)})"
            for mode, key in (("beat", "beat"), ("bar", "bar"), ("phrase:4", "phrase4"))),
        f"  OSC over loopback UDP ({r.get('osc_switches', 0)} switches): to the switch p50 "
        f"{_fmt(r.get('osc_to_switch_ms_p50'))} ms, p99 {_fmt(r.get('osc_to_switch_ms_p99'))} ms; to its bar line "
        f"p50 {_fmt(r.get('osc_to_applied_ms_p50'), 0)} ms, p99 {_fmt(r.get('osc_to_applied_ms_p99'), 0)} ms; "
        f"to its first note "
        f"p50 {_fmt(r.get('osc_to_sound_ms_p50'), 0)} ms, p99 {_fmt(r.get('osc_to_sound_ms_p99'), 0)} ms",
        f"  memory: {_fmt(r['rss_growth_mb_per_hour'])} MB/hour over {r['simulated_minutes']:.0f} simulated "
        f"minutes ({r['rss_warm_mb']:.0f} → {r['rss_end_mb']:.0f} MB); peak RSS {r['peak_rss_mb']:.0f} MB",
        "",
        "goals",
    ]
    for key, g in r["goals"].items():
        verdict = {True: "pass", False: "MISS", None: "n/a"}[g["pass"]]
        note = g.get("note", "") if key != "underruns" or r.get("stream_s", 0) < 590 else ""
        lines.append(f"  {key:<24} {_fmt(g['value']):>10}  goal {g['goal']:<7} {verdict} {note}".rstrip())
    levers = r.get("levers")
    if levers:
        lines += ["", "levers (same process, same machine)"]
        lines += _format_levers(levers)
    return "\n".join(lines)


def _format_levers(levers: dict) -> list[str]:
    out = []
    f = levers.get("fused_step")
    if f:
        out.append(f"  fused step (model only; shipped on CPU): GPT.forward {_fmt(f['step_p50_ms_forward'], 3)} ms → "
                   f"fused {_fmt(f['step_p50_ms_fused'], 3)} ms (×{_fmt(f['speedup_fused'])}); guided "
                   f"{_fmt(f['step_p50_ms_forward_guided'], 3)} → {_fmt(f['step_p50_ms_fused_guided'], 3)} ms "
                   f"(×{_fmt(f['speedup_fused_guided'])})")
    t = levers.get("threads")
    if t:
        out.append(f"  decode threads: 1 → {_fmt(t['tok_s_1_thread'], 0)} tok/s, 2 → {_fmt(t['tok_s_2_threads'], 0)} "
                   f"tok/s (×{_fmt(t['speedup_2_over_1'])}); p99 {_fmt(t['p99_ms_1_thread'])} vs "
                   f"{_fmt(t['p99_ms_2_threads'])} ms")
    q = levers.get("int8")
    if q:
        out.append(f"  int8 dynamic quantisation: {_fmt(q['tok_s_fp32'], 0)} → {_fmt(q['tok_s_int8'], 0)} tok/s "
                   f"(×{_fmt(q['speedup_int8'])})")
    c = levers.get("compile")
    if c:
        out.append(f"  torch.compile (static-cache step, model only): decoder {_fmt(c['step_p50_ms_decoder_eager'], 3)} "
                   f"ms, static eager {_fmt(c['step_p50_ms_static_eager'], 3)} ms, compiled "
                   f"{_fmt(c['step_p50_ms_static_compiled'], 3)} ms (×{_fmt(c['speedup_compiled_over_decoder'])}; "
                   f"compile {_fmt(c['compile_s'], 1)} s)")
    rt = levers.get("rt_priority")
    if rt:
        out.append("  scheduler thread priority (real clock; --rt-priority auto vs off):")
        for mode in ("auto", "off"):
            m = rt[mode]
            out.append(f"    {mode:<4} ({m['realtime_priority']:<4}) timer alone p50 "
                       f"{_fmt(m['timer_error_p50_ms'])} ms, p99 {_fmt(m['timer_error_p99_ms'])} ms, "
                       f"max {_fmt(m['timer_error_max_ms'])} ms; "
                       f"send error p50 {_fmt(m['send_error_p50_ms'])} ms, p99 {_fmt(m['send_error_p99_ms'])} ms, "
                       f"max {_fmt(m['send_error_max_ms'])} ms over {m['stream_s']:.0f} s; "
                       f"underruns {m['underruns']}")
    g = levers.get("guidance_batching")
    if g:
        out.append(f"  guidance pair: one batched forward {_fmt(g['step_p50_ms_batched'], 3)} ms vs two forwards "
                   f"{_fmt(g['step_p50_ms_two_forwards'], 3)} ms (×{_fmt(g['speedup_batched'])})")
    shapes = levers.get("shapes")
    if shapes:
        out.append(f"  shapes (random weights, context 512): {'shape':>8} {'params':>11} {'fp32 tok/s':>10} "
                   f"{'int8 tok/s':>10} {'RTF@420 tok':>11}")
        for s in shapes:
            out.append(f"  {'':37} {s['n_layer']}x{s['n_embd']:<6} {s['params']:>11,} {_fmt(s['tok_s_fp32'], 0):>10} "
                       f"{_fmt(s.get('tok_s_int8'), 0):>10} {_fmt(s['dense_bar_rtf_fp32'], 1):>11}")
    b = levers.get("bpe")
    if b and "remi" in b:
        out.append(f"  tokens per bar (validation, {b['remi']['bars']:,} bars): REMI mean {_fmt(b['remi']['mean'], 1)}, "
                   f"p99 {_fmt(b['remi']['p99'], 0)}")
        for key, s in b.items():
            if key.startswith("bpe_"):
                out.append(f"    {key.replace('bpe_', 'BPE vocab '):<16} mean {_fmt(s['mean'], 1)} "
                           f"(×{_fmt(s['mean_ratio_to_remi'])}), p99 {_fmt(s['p99'], 0)} (×{_fmt(s['p99_ratio_to_remi'])})")
    elif b:
        out.append(f"  BPE: {b.get('skipped', 'skipped')}")
    return out
