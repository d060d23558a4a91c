"""The paced garbage collector: automatic collection off while open, collections when due and they fit."""

from __future__ import annotations

import gc
import weakref

import pytest

from streamer.gcpacing import MIN_SLACK_S, OVERDUE, SLACK_FACTOR, PacedCollector


class Node:
    def __init__(self):
        self.me = self  # a cycle: only the cyclic collector frees it


@pytest.fixture
def collector():
    assert gc.isenabled()
    gc.collect()
    paced = PacedCollector()
    yield paced
    paced.close()
    assert gc.isenabled()


def allocate(n: int) -> list:
    return [[] for _ in range(n)]  # containers the collector tracks: they count towards its threshold


def test_automatic_collection_is_off_while_open_and_nests():
    outer = PacedCollector()
    inner = PacedCollector()
    assert not gc.isenabled()
    outer.close()
    assert not gc.isenabled(), "one collector is still open"
    inner.close()
    inner.close()  # idempotent: it does not close another's share
    assert gc.isenabled()


def test_a_collector_leaves_collection_off_if_it_was_off():
    gc.disable()
    try:
        PacedCollector().close()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_cycle_waits_for_idle_time_then_is_freed(collector):
    node = Node()
    freed = weakref.ref(node)
    del node
    keep = allocate(2 * collector.threshold[0])  # past the threshold: automatic collection would have run
    assert freed() is not None and collector.due() == 0
    assert not collector.idle(0.001), "no collection with less slack than MIN_SLACK_S"
    assert freed() is not None
    assert collector.idle(1.0)
    assert freed() is None and collector.due() == -1 and collector.collections[0] == 1
    del keep


def test_nothing_is_collected_before_it_is_due(collector):
    assert collector.due() == -1
    assert not collector.idle(1.0)
    assert collector.collections == [0, 0, 0]


def test_an_overdue_collection_runs_without_slack(collector):
    node = Node()
    freed = weakref.ref(node)
    del node
    keep = allocate(OVERDUE * collector.threshold[0] + 100)
    assert collector.idle(0.0)
    assert freed() is None
    del keep


def test_older_generations_follow_cpythons_order(collector):
    keep = []
    for _ in range(collector.threshold[1] + 1):
        keep.append(allocate(collector.threshold[0] + 1))
        assert collector.idle(1.0)
    assert collector.collections[1] == 1, collector.collections
    del keep


def test_an_older_generation_that_does_not_fit_gives_way_to_a_younger_one(collector):
    keep = []
    for _ in range(collector.threshold[1]):
        keep.append(allocate(collector.threshold[0] + 1))
        assert collector.idle(1.0)
    keep.append(allocate(collector.threshold[0] + 1))
    assert collector.due() == 1
    slack_s = max(MIN_SLACK_S, SLACK_FACTOR * collector.longest_s[0])  # room for a young pass only
    assert slack_s < SLACK_FACTOR * collector.longest_s[1]
    before = list(collector.collections)
    assert collector.idle(slack_s)
    assert collector.collections == [before[0] + 1, 0, 0]
    del keep
