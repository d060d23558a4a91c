"""Real-time priority of the scheduler thread (`streamer.rt`, `--rt-priority`), on the real clock: only that
thread runs at SCHED_FIFO and gives it back, it sleeps between events, threads it starts are ordinary,
`off` keeps SCHED_OTHER, and the generator's quiet window never stays closed. Where this machine does not
permit SCHED_FIFO the tests that need it are skipped (they say so)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bar_text import make_bars

from streamer.barqueue import BarQueue, QuietWindow
from streamer.bars import RemiTable
from streamer.clock import MonotonicClock
from streamer.outputs.base import Output
from streamer.outputs.null import MemoryOutput
from streamer.rt import raise_thread_priority, realtime_threads, restore_thread_priority, thread_priority
from streamer.scheduler import Scheduler, SchedulerConfig

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread policies are Linux's")


def policy_of(tid: int) -> int:
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK


def fifo_permitted() -> bool:
    """Whether this process may run a thread at SCHED_FIFO (tried on a throwaway thread)."""
    got = {}

    def probe():
        saved = raise_thread_priority("auto")
        got["mode"] = saved.mode
        restore_thread_priority(saved)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return got["mode"] == "fifo"


needs_fifo = pytest.mark.skipif(not fifo_permitted(), reason="SCHED_FIFO is not permitted here (no rtprio)")


@pytest.fixture(scope="module")
def silent_bars(vocab):
    """Bars without a note (a 4/4 time signature only): the scheduler has nothing to send but bar lines."""
    return make_bars(vocab, RemiTable(vocab), *[""] * 3)


def start_scheduler(bars, rt_priority: str, outputs=None, bpm: float = 240.0, notify=None) -> Scheduler:
    """A scheduler thread on the real clock over `bars` (queued up front), at `bpm`."""
    queue = BarQueue(size=len(bars))
    for bar in bars:
        queue.put(bar)
    scheduler = Scheduler(queue, outputs or [MemoryOutput()], MonotonicClock(),
                          SchedulerConfig(start_delay_s=0.0, max_bars=len(bars), rt_priority=rt_priority),
                          notify=notify)
    scheduler.set_bpm(bpm)
    scheduler.start()
    assert scheduler.started.wait(10.0), "the scheduler did not start"
    return scheduler


def thread_cpu_s(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.parametrize("rt_priority", ["auto", "off"])
def test_the_scheduler_thread_sleeps_through_a_silent_stretch(silent_bars, rt_priority):
    """Over 1.5 s with nothing to send but bar lines, the thread's CPU time is a small part of the wall time:
    it sleeps between events (its last stretch before a due time is bounded), at any priority."""
    scheduler = start_scheduler(silent_bars, rt_priority)  # 3 bars of 4 beats at 240 BPM: 3 s
    thread = scheduler._thread
    cpu0, wall0 = thread_cpu_s(thread), time.perf_counter()
    finished_early = scheduler.finished.wait(1.5)
    cpu_s, wall_s = thread_cpu_s(thread) - cpu0, time.perf_counter() - wall0
    assert not finished_early, "the stretch ended before it was measured"
    assert scheduler.join(10.0)
    assert cpu_s < 0.05 * wall_s, f"the scheduler thread used {cpu_s:.3f} s of CPU in {wall_s:.2f} s"


@needs_fifo
def test_only_the_scheduler_thread_runs_at_fifo_and_gives_it_back(silent_bars):
    news = []
    scheduler = start_scheduler(silent_bars, "auto", notify=news.append)
    tid = scheduler._thread.native_id
    assert policy_of(tid) == os.SCHED_FIFO
    assert realtime_threads() == [tid]
    assert scheduler.stats().realtime_priority == "fifo"
    assert scheduler.join(10.0)  # max_bars: it stops by itself
    assert realtime_threads() == []
    assert scheduler.stats().realtime_priority == "fifo"  # what it ran at
    assert not scheduler.queue.quiet.closed
    # news made while the quiet window was closed (every bar line) came out, in order, before the end
    assert [type(n).__name__ for n in news] == ["BarStarted"] * 3 + ["PlaybackStopped"]
    assert [n.bar_number for n in news[:3]] == [0, 1, 2]


@pytest.fixture(scope="module")
def chord_bars(vocab):
    """Five bars of four beats, each with a three-note chord on every beat."""
    chord = " ".join(f"Pitch_{p} Velocity_63 Duration_1.0.8" for p in (60, 64, 67))
    text = " ".join(f"Position_{8 * beat} Program_0 {chord}" for beat in range(4))
    return make_bars(vocab, RemiTable(vocab), *[text] * 5)


@pytest.mark.parametrize("rt_priority", ["auto", "off"])
def test_a_queued_bar_starts_before_its_line_and_no_note_goes_early(chord_bars, rt_priority):
    """On the real clock a bar already queued is taken and scheduled `BAR_LEAD_S` before its line (its
    BarStarted comes out well before its first note), and still no note is sent before its due time."""
    from streamer.scheduler import BAR_LEAD_S

    clock, bpm = MonotonicClock(), 480.0  # 0.5 s a bar
    out, started_s = MemoryOutput(clock), {}
    scheduler = start_scheduler(chord_bars, rt_priority, outputs=[out], bpm=bpm,
                                notify=lambda n: started_s.setdefault(getattr(n, "bar_number", None), clock.now()))
    assert scheduler.join(10.0)
    ons = [(sent_s, msg.time) for sent_s, msg in out.log if msg.type == "note_on"]
    assert len(ons) == 5 * 4 * 3
    for sent_s, beat in ons:  # one tempo throughout: the timebase maps every beat as it did when it played
        assert sent_s >= scheduler.timebase.due_s(beat), f"the note at beat {beat} went early"
    first_note_s = {bar: min(s for s, beat in ons if int(beat // 4) == bar) for bar in range(5)}
    early = [bar for bar in range(1, 5) if first_note_s[bar] - started_s[bar] > BAR_LEAD_S / 4]
    assert len(early) >= 3, f"bars started early: {early} (of 1-4)"


def test_the_collector_is_paced_while_the_real_clock_plays(silent_bars):
    import gc

    assert gc.isenabled()
    scheduler = start_scheduler(silent_bars, "auto")
    try:
        assert not gc.isenabled(), "automatic collection is off while the scheduler paces it"
    finally:
        scheduler.stop()
        assert scheduler.join(10.0)
    assert gc.isenabled()


def test_rt_priority_off_keeps_sched_other(silent_bars):
    scheduler = start_scheduler(silent_bars, "off")
    try:
        assert policy_of(scheduler._thread.native_id) == os.SCHED_OTHER
        assert scheduler.stats().realtime_priority in ("nice", "none")
        assert realtime_threads() == []
    finally:
        scheduler.stop()
        assert scheduler.join(10.0)


def test_the_fake_clock_changes_no_priority(silent_bars):
    from streamer.clock import FakeClock

    queue = BarQueue(size=len(silent_bars))
    for bar in silent_bars:
        queue.put(bar)
    seen = {}

    class Probe(MemoryOutput):
        def _send(self, msg):
            seen.setdefault("policy", os.sched_getscheduler(0))
            super()._send(msg)

    scheduler = Scheduler(queue, [Probe()], FakeClock(), SchedulerConfig(start_delay_s=0.0, max_bars=3))
    scheduler.run()
    assert scheduler.stats().realtime_priority == "none"
    assert seen["policy"] == os.SCHED_OTHER


@needs_fifo
def test_run_on_the_callers_thread_puts_its_priority_back(silent_bars):
    """`Scheduler.run()` called directly leaves the calling thread as it found it (policy and nice)."""
    queue = BarQueue(size=1)
    queue.put(silent_bars[0])
    scheduler = Scheduler(queue, [MemoryOutput()], MonotonicClock(),
                          SchedulerConfig(start_delay_s=0.0, max_bars=1))
    scheduler.set_bpm(960.0)
    after = {}

    def body():
        before = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        scheduler.run()
        after["before"] = before
        after["after"] = (os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK,
                          os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        after["mode"] = thread_priority()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10.0)
    assert scheduler.stats().realtime_priority == "fifo"
    assert after["after"] == after["before"] and after["mode"] == "none"


@needs_fifo
def test_threads_the_scheduler_thread_starts_are_ordinary(silent_bars):
    """An output that starts a thread from `send` (as the JACK outputs start their `Reconnector`) gets an
    ordinary one: SCHED_OTHER, nice 0, although the scheduler thread runs at SCHED_FIFO."""
    from streamer.outputs.port import Reconnector

    started = []

    class Starting(Output):
        name = "starting"
        wants_meta = True  # a silent bar sends its tempo

        def _send(self, msg):
            if not started:
                started.append(Reconnector("test", reopen=lambda: None, interval_s=60.0))

    scheduler = start_scheduler(silent_bars, "auto", outputs=[Starting()])
    try:
        for _ in range(200):
            if started:
                break
            time.sleep(0.01)
        assert started, "the output was never sent anything"
        assert policy_of(scheduler._thread.native_id) == os.SCHED_FIFO
        child = started[0]._thread.native_id
        assert policy_of(child) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, child) == 0
    finally:
        scheduler.stop()
        assert scheduler.join(10.0)
        for reconnector in started:
            reconnector.stop()


def test_the_quiet_window_pauses_the_writer_only_while_closed():
    window = QuietWindow(max_wait_s=30.0)
    window.pause()  # open: returns at once
    window.close()
    assert window.closed
    passed = threading.Event()
    writer = threading.Thread(target=lambda: (window.pause(), passed.set()))
    writer.start()
    assert not passed.wait(0.2), "the writer went through a closed window"
    window.open()
    writer.join(10.0)
    assert passed.is_set() and not window.closed


def test_a_paused_writer_goes_on_after_max_wait():
    window = QuietWindow(max_wait_s=0.01)
    window.close()
    writer = threading.Thread(target=window.pause)
    writer.start()
    writer.join(10.0)
    assert not writer.is_alive() and window.closed  # it went on; the window is still closed


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from streamer.engine import load_model

    torch.set_num_threads(1)
    model, vocab, _ = load_model(tiny_model_dir, "cpu")
    return model, vocab


@pytest.mark.parametrize("rt_priority", ["auto", "off"])
def test_after_engine_stop_no_thread_is_fifo(tiny, rt_priority):
    """A real engine on the real clock: while it plays, the scheduler thread is the only real-time one
    (never the generator or the news thread), and after `stop()` none is; the quiet window is open."""
    from streamer.engine import Engine, EngineConfig

    model, vocab = tiny
    engine = Engine(EngineConfig(rt_priority=rt_priority), [MemoryOutput()], MonotonicClock(), model=model,
                    vocab=vocab)
    engine.start()
    try:
        assert engine.scheduler.started.wait(60.0), "the stream did not start"
        fifo = fifo_permitted() and rt_priority == "auto"
        assert realtime_threads() == ([engine.scheduler._thread.native_id] if fifo else [])
        assert engine.stats().realtime_priority in (("fifo",) if fifo else ("nice", "none"))
        assert policy_of(engine.generator._thread.native_id) == os.SCHED_OTHER
    finally:
        engine.stop()
    assert realtime_threads() == []
    assert not engine.queue.quiet.closed


def cli(*args):
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", ["play", "stream", "bench"])
def test_rt_priority_flag_is_offered_and_checked(command):
    assert "--rt-priority {auto,off}" in cli(command, "--help").stdout
    out = cli(command, "--rt-priority", "fast")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith(
        "argument --rt-priority: invalid choice: 'fast' (choose from 'auto', 'off')")


def test_engine_config_refuses_an_unknown_mode():
    from model.errors import MoodstreamError
    from streamer.engine import EngineConfig

    with pytest.raises(MoodstreamError, match="--rt-priority 'fast': use one of auto, off"):
        EngineConfig(rt_priority="fast")
    with pytest.raises(ValueError, match="rt_priority = 'fast'"):
        SchedulerConfig(rt_priority="fast")


def test_freeze_heap_takes_the_loaded_objects_out_of_the_collectors_reach():
    """After loading the model, its objects are frozen (a subprocess: freezing is process-wide); the pause
    this saves is measured by the bench, not here."""
    import subprocess
    import sys

    code = ("import gc\n"
            "from streamer.engine import freeze_heap, load_model\n"
            "load_model(None, 'cpu')\n"
            "assert gc.get_freeze_count() == 0\n"
            "print(freeze_heap(), gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    returned, counted = map(int, out.stdout.split())
    assert returned == counted > 10_000
