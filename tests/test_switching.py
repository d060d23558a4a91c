"""The decisions of a switch's path (`streamer.switching`) and the queue's share of it (`BarQueue.switch_from`),
with the real vocabulary and real bars."""

from __future__ import annotations

from bar_text import make_bars

from model.vocab import Conditions
from streamer import switching
from streamer.barqueue import BarQueue
from streamer.bars import RemiTable
from streamer.controls import SwitchAt

ROCK_SAD = Conditions("rock", "sad")
ROCK_HAPPY = Conditions("rock", "happy")


def start(vocab, previous, conditions=ROCK_HAPPY, **options):
    settings = dict(every_bar=False, empty_context=False, guided=True, context_bars=0, negative="any")
    return switching.bar_start(vocab, previous, conditions, **{**settings, **options})


def test_a_block_opens_the_first_bar_a_switch_and_every_bar_of_a_bar_conditioned_model(vocab):
    block = vocab.condition_ids(ROCK_HAPPY) + [vocab.bar_id]
    assert start(vocab, None, empty_context=True).prefix == block
    assert start(vocab, ROCK_SAD).prefix == block
    assert start(vocab, ROCK_HAPPY).prefix == [vocab.bar_id]
    assert start(vocab, ROCK_HAPPY, every_bar=True).prefix == block
    assert start(vocab, ROCK_HAPPY, empty_context=True).prefix == block


def test_a_switch_keeps_the_old_bars_it_is_told_to_and_guides_against_the_old_block_when_asked(vocab):
    switch = start(vocab, ROCK_SAD, context_bars=2, negative="old")
    assert switch.afresh and switch.context_bars == 2
    assert switch.negative == vocab.condition_ids(ROCK_SAD) + [vocab.bar_id]
    assert not start(vocab, ROCK_SAD, context_bars=None).afresh  # keep all that fits: no rebuild for the switch
    assert start(vocab, ROCK_SAD, negative="old", guided=False).negative is None
    assert start(vocab, ROCK_SAD).negative is None
    same = start(vocab, ROCK_HAPPY, negative="old")
    assert not same.afresh and same.negative is None


def test_the_boost_weight_holds_for_the_first_bars_of_a_switch_only():
    weights = [switching.guidance_w(seq, 10, 1.5, 4.0, 2) for seq in range(10, 14)]
    assert weights == [4.0, 4.0, 1.5, 1.5]
    assert switching.guidance_w(10, 10, 1.5, None, 2) == 1.5


def test_a_switch_fits_the_next_line_only_with_time_for_its_head_and_for_the_whole_bar():
    # head 0.2 s, bar 1.0 s, bars play 2.0 s, margin 1.5
    assert switching.fits(0.31, 0.2, 1.0, 2.0, 1.5)
    assert not switching.fits(0.29, 0.2, 1.0, 2.0, 1.5)  # its first note would miss the line
    assert not switching.fits(0.31, 0.2, 1.0, 1.0, 1.5)  # the bar after it would be an underrun


def test_a_phrase_switch_lands_on_the_next_multiple_of_its_length_in_playback_bars():
    phrase = SwitchAt(4)
    assert switching.landing_seq(5, lambda seq: seq, phrase) == 8
    assert switching.landing_seq(8, lambda seq: seq, phrase) == 8
    assert switching.landing_seq(5, lambda seq: seq + 2, phrase) == 6  # an underrun put playback 2 bars on
    assert switching.landing_seq(5, lambda seq: seq, SwitchAt()) == 5


def test_the_queue_moves_a_switch_past_the_bars_already_started_and_drops_the_rest(vocab):
    bars = make_bars(vocab, RemiTable(vocab), *["Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8"] * 4)
    queue = BarQueue(size=4)
    for bar in bars:
        queue.put(bar)
    assert queue.take(wait=False).seq == 0 and queue.take(wait=False).seq == 1
    assert queue.next_to_play() == 2
    assert queue.switch_from(1, written_upto=3) == (2, 2)  # bar 1 plays already: the switch starts at 2
    assert queue.queued() == [] and queue.rolled_back(2) and not queue.rolled_back(1)
    assert not queue.put(bars[2]) and queue.take_rollback() == 2 and not queue.rolled_back(5)


def test_a_switch_past_every_bar_written_drops_nothing_and_marks_no_rollback(vocab):
    bars = make_bars(vocab, RemiTable(vocab), "Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8")
    queue = BarQueue(size=2)
    queue.put(bars[0])
    assert queue.switch_from(1, written_upto=0) == (1, 0)
    assert queue.queued() == bars and queue.take_rollback() is None
