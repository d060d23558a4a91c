"""OSC control latency for `moodstream bench`: `/moodstream/conditions` messages sent over real UDP on loopback
to an `OscServer` and `Remote` in front of a real-clock engine, timed from the send to the engine's switch
(`SwitchPending`, posted as the switch is decided: the control path's own latency), to its bar line
(`SwitchApplied`) and to the first note under the new conditions (both include waiting for that bar line).
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class OscLatency:
    messages: int  # switches sent
    switched: int  # of them, decided by the engine (SwitchPending) within the timeout
    sounded: int  # of them, heard (SwitchSounded) within the timeout
    to_switch_ms_p50: float
    to_switch_ms_p99: float
    to_applied_ms_p50: float
    to_applied_ms_p99: float
    to_sound_ms_p50: float
    to_sound_ms_p99: float


class _OscNews:
    """The engine's news the run waits on: the switch each OSC message made, when, and its first note."""

    def __init__(self, clock):
        self.clock = clock
        self.cond = threading.Condition()
        self.bar_starts = 0
        self.pending: list[tuple[int, float]] = []  # (switch id, clock s when posted)
        self.applied: dict[int, float] = {}  # switch id → clock s when its bar line's news was posted
        self.sounded: dict[int, float] = {}  # switch id → latency ms from its request to its first note

    def on_pending(self, news) -> None:  # sync: on the remote's thread, as the switch is decided
        now_s = self.clock.now()
        with self.cond:
            self.pending.append((news.switch_id, now_s))
            self.cond.notify_all()

    def on_news(self, news, posted_s: float) -> None:
        from streamer.news import BarStarted, SwitchApplied, SwitchSounded

        with self.cond:
            if isinstance(news, BarStarted):
                self.bar_starts += 1
            elif isinstance(news, SwitchApplied):
                self.applied.setdefault(news.switch_id, posted_s)
            elif isinstance(news, SwitchSounded):
                self.sounded.setdefault(news.switch_id, news.latency_ms)
            self.cond.notify_all()


def osc_run(model, vocab, switches: int, seed: int = 0, rt_priority: str = "auto",
            timeout_s: float = 12.0) -> OscLatency:
    """Stream on the real clock at the bench's tempo into a null output, with OSC on a free loopback port; send
    `switches` genre/mood switches, one per bar at a random point of it, each waiting for its first note."""
    from streamer.bench.decode import percentile_ms
    from streamer.bench.stream import BENCH_BPM, _condition_pairs
    from streamer.clock import MonotonicClock
    from streamer.controls import Controls
    from streamer.engine import Engine, EngineConfig, freeze_heap
    from streamer.generator import GeneratorConfig
    from streamer.news import SwitchPending
    from streamer.osc import OscServer, build_message
    from streamer.outputs.null import NullOutput
    from streamer.remote import Remote

    clock = MonotonicClock()
    news = _OscNews(clock)
    pairs = _condition_pairs(vocab, seed + 2)
    genre, mood = pairs[-1]
    engine = Engine(EngineConfig(realtime=True, midi_clock=False, rt_priority=rt_priority,
                                 generator=GeneratorConfig(seed=seed)), [NullOutput()], clock=clock,
                    controls=Controls(genre=genre, mood=mood, bpm=BENCH_BPM), model=model, vocab=vocab)
    engine.news.subscribe(news.on_news, timed=True)
    engine.news.subscribe(news.on_pending, SwitchPending, sync=True)
    remote: Optional[Remote] = None
    server: Optional[OscServer] = None
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(seed)
    sent: list[float] = []
    freeze_heap()
    engine.start()
    try:
        remote = Remote(engine).start()
        server = OscServer(remote, engine.news, port=0).start()
        if not engine.scheduler.started.wait(60.0):
            raise RuntimeError("the stream did not start within 60 s")
        bar_s = 4 * 60.0 / BENCH_BPM
        for i in range(switches):
            with news.cond:
                seen = news.bar_starts
                news.cond.wait_for(lambda: news.bar_starts > seen, timeout_s)
            threading.Event().wait(rng.uniform(0.0, 0.8 * bar_s))
            genre, mood = pairs[i % len(pairs)]
            sent.append(clock.now())
            sender.sendto(build_message("/moodstream/conditions", [genre, mood]), (server.host, server.port))
            with news.cond:
                if not news.cond.wait_for(lambda: len(news.pending) > i, timeout_s):
                    break
                switch_id = news.pending[i][0]
                news.cond.wait_for(lambda: switch_id in news.sounded, timeout_s)
    finally:
        sender.close()
        if server is not None:
            server.close()
        if remote is not None:
            remote.close()
        engine.stop()
    to_switch, to_applied, to_sound = [], [], []  # seconds from the send
    with news.cond:
        for sent_s, (switch_id, pending_s) in zip(sent, news.pending):
            to_switch.append(pending_s - sent_s)
            if switch_id in news.applied:
                to_applied.append(news.applied[switch_id] - sent_s)
            if switch_id in news.sounded:  # its request came just before SwitchPending: the same instant here
                to_sound.append(to_switch[-1] + news.sounded[switch_id] / 1e3)
    return OscLatency(len(sent), len(to_switch), len(to_sound), percentile_ms(to_switch, 50),
                      percentile_ms(to_switch, 99), percentile_ms(to_applied, 50), percentile_ms(to_applied, 99),
                      percentile_ms(to_sound, 50), percentile_ms(to_sound, 99))
