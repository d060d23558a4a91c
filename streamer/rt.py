"""Scheduling priority of the calling thread: the scheduler thread asks for real-time priority here.

    saved = raise_thread_priority("auto")   # saved.mode: "fifo" | "nice" | "none"
    ...                                      # the timing loop
    restore_thread_priority(saved)

`auto` asks for SCHED_FIFO at `RT_PRIORITY` (Linux, where permitted: root, `rtprio` in limits.conf,
CAP_SYS_NICE), else nice −10, else nothing; `off` skips SCHED_FIFO. Only the calling thread changes, and
threads it starts afterwards begin as ordinary threads (SCHED_RESET_ON_FORK). Elsewhere (macOS, Windows)
nothing changes: "none".
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

RT_PRIORITY = 20  # SCHED_FIFO priority (1-99): modest, as rtkit's default ceiling; JACK's own threads sit near it
NICE = -10  # the fallback: ahead of ordinary work, still time-shared
RT_MODES = ("auto", "off")  # --rt-priority
PRIORITY_MODES = ("fifo", "nice", "none")  # what the thread got (stats: realtime_priority)


_thread = threading.local()  # .mode: what `raise_thread_priority` got on this thread


def thread_priority() -> str:
    """What `raise_thread_priority` got on the calling thread ("fifo" | "nice" | "none"; "none" after
    `restore_thread_priority`, and on threads that never asked)."""
    return getattr(_thread, "mode", "none")


@dataclass(frozen=True)
class SavedPriority:
    """What `raise_thread_priority` got (`mode`) and what to put back (the thread's policy, its parameter
    and its nice value before)."""

    mode: str
    tid: int
    policy: Optional[int] = None  # None: the policy was not changed
    param: int = 0
    nice: Optional[int] = None  # None: the nice value was not changed


def _linux() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "sched_setscheduler")


def _fifo_priority() -> Optional[int]:
    """The SCHED_FIFO priority to ask for: `RT_PRIORITY`, or the lower ceiling RLIMIT_RTPRIO grants an
    unprivileged user (None when it grants none; root and CAP_SYS_NICE are not bound by it)."""
    if os.geteuid() == 0:
        return RT_PRIORITY
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    if soft == resource.RLIM_INFINITY or soft >= RT_PRIORITY:
        return RT_PRIORITY
    return soft if soft > 0 else RT_PRIORITY  # 0: CAP_SYS_NICE may still allow it; the kernel decides


def raise_thread_priority(request: str = "auto", nice: int = NICE, who: str = "scheduler thread") -> SavedPriority:
    """Raise the calling thread's priority as `request` ("auto" | "off") allows; one log line says what
    `who` got. Never raises for want of permission."""
    if request not in RT_MODES:
        raise ValueError(f"rt_priority = {request!r}: use one of {', '.join(RT_MODES)}")
    tid = threading.get_native_id()
    _thread.mode = "none"
    if not _linux():
        log.info("%s: ordinary priority (no per-thread priority on %s)", who, sys.platform)
        return SavedPriority("none", tid)
    old_policy = os.sched_getscheduler(0)
    old_param = os.sched_getparam(0).sched_priority
    old_nice = os.getpriority(os.PRIO_PROCESS, tid)
    reason = "--rt-priority off"
    if request == "auto":
        priority = _fifo_priority()
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
        except OSError as err:
            reason = f"SCHED_FIFO not permitted: {err.strerror}"
        else:
            log.info("%s: real-time priority (SCHED_FIFO %d)", who, priority)
            _thread.mode = "fifo"
            return SavedPriority("fifo", tid, old_policy, old_param)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)  # Linux: this thread only
    except OSError as err:
        log.info("%s: ordinary priority (%s; nice %d not permitted either: %s)", who, reason, nice, err.strerror)
        return SavedPriority("none", tid)
    try:  # threads it starts must not inherit the raised priority
        os.sched_setscheduler(0, old_policy | os.SCHED_RESET_ON_FORK, os.sched_param(old_param))
        policy: Optional[int] = old_policy
    except OSError:
        policy = None
    log.info("%s: nice %d (%s)", who, nice, reason)
    _thread.mode = "nice"
    return SavedPriority("nice", tid, policy, old_param, old_nice)


def restore_thread_priority(saved: SavedPriority) -> None:
    """Put the calling thread (the one that raised it) back as it was before `raise_thread_priority`."""
    if saved.tid != threading.get_native_id():
        raise RuntimeError("restore_thread_priority must run on the thread that raised its priority")
    _thread.mode = "none"
    if saved.policy is not None:
        for policy in (saved.policy, saved.policy | os.SCHED_RESET_ON_FORK):
            try:  # only a privileged thread may clear SCHED_RESET_ON_FORK: else keep the flag
                os.sched_setscheduler(0, policy, os.sched_param(saved.param))
                break
            except OSError as err:
                log.debug("policy %d not restored (%s)", policy, err)
    if saved.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, saved.tid, saved.nice)
        except OSError as err:
            log.debug("nice %d not restored (%s)", saved.nice, err)


def realtime_threads() -> list[int]:
    """Native ids of this process's threads that run under a real-time policy (SCHED_FIFO / SCHED_RR);
    empty off Linux."""
    if not _linux():
        return []
    found = []
    for entry in os.listdir("/proc/self/task"):
        try:
            policy = os.sched_getscheduler(int(entry)) & ~os.SCHED_RESET_ON_FORK
        except OSError:  # the thread ended meanwhile
            continue
        if policy in (os.SCHED_FIFO, os.SCHED_RR):
            found.append(int(entry))
    return found
