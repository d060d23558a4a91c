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
    assert not queue.put(bars[2]) and queue.take_rollback_cut() == (2, None) and not queue.rolled_back(5)


def test_a_switch_past_every_bar_written_drops_nothing_and_marks_no_rollback(vocab):
    bars = make_bars(vocab, RemiTable(vocab), "Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8")
    queue = BarQueue(size=2)
    queue.put(bars[0])
    assert queue.switch_from(1, written_upto=0) == (1, 0)
    assert queue.queued() == bars and queue.take_rollback_cut() == (None, None)


# ---- beat switches --------------------------------------------------------------------------------------------
def test_a_beat_switch_lands_on_the_first_beat_it_can_reach_or_on_none():
    # a 4/4 bar, beats of 0.5 s, head 0.1 s, bar written in 0.4 s, margin 1.5
    assert switching.beat_landing(0.2, 4.0, 0.5, 0.1, 0.4, 1.5) == 1
    assert switching.beat_landing(0.8, 4.0, 0.5, 0.1, 0.4, 1.5) == 2  # 0.1 s to beat 1: its head would miss it
    assert switching.beat_landing(1.0, 4.0, 0.5, 0.1, 0.4, 1.5) == 2  # on a beat: the next one
    assert switching.beat_landing(3.1, 4.0, 0.5, 0.1, 0.4, 1.5) is None  # the last beat has begun: a bar switch
    assert switching.beat_landing(0.2, 4.0, 0.5, 0.1, 0.4, 30.0) is None  # no beat in time
    # the rest of the bar and the next bar's head must be written before the bar ends, not only the head
    assert switching.beat_landing(0.2, 4.0, 0.5, 0.01, 3.0, 1.0) == 2  # 1.9 s left: 2 beats of 3 take 1.5
    assert switching.beat_landing(2.2, 3.5, 0.5, 0.1, 0.4, 1.5) == 3  # 7/8: whole beats 1 to 3
    assert switching.beat_landing(3.0, 3.5, 0.5, 0.0, 0.0, 1.5) is None  # the half beat left is no whole beat


def test_a_cut_ends_every_old_note_at_it_and_drops_the_rest_of_the_old_music():
    import mido

    on = mido.Message("note_on", note=60)
    off = mido.Message("note_off", note=60)
    tempo = mido.MetaMessage("set_tempo")
    events = [(1.0, 2, 1, on, 0), (2.0, 0, 2, off, 0), (5.0, 0, 3, off, 0), (3.0, 2, 4, on, 0), (3.0, 1, 5, tempo, 0),
              (3.5, 0, 6, off, 0)]
    assert switching.cut_events(events, 3.0) == [(1.0, 2, 1, on, 0), (2.0, 0, 2, off, 0), (3.0, 0, 3, off, 0),
                                                  (3.0, 0, 6, off, 0)]


def test_the_rest_of_a_cut_bar_opens_with_its_time_signature_positions_from_the_cut_and_its_tempo(vocab):
    from model.grammar import Grammar

    table = RemiTable(vocab)
    ids = [vocab.token_to_id[t] for t in ("Bar_None TimeSig_3/4 Position_0 Tempo_134.84 Program_0 Pitch_60 Velocity_63 "
                                          "Duration_1.0.8 Position_16 Tempo_100.97 Program_0 Pitch_62 Velocity_63 "
                                          "Duration_1.0.8").split()]
    start = switching.fragment_start(table, ids, 1)
    assert start == switching.FragmentStart(vocab.token_to_id["TimeSig_3/4"], 8, vocab.token_to_id["Tempo_134.84"],
                                            134.84)
    assert switching.fragment_start(table, ids, 2).tempo_qpm == 134.84  # a tempo at the cut is the new music's
    assert switching.fragment_start(table, ids[:2], 2) == switching.FragmentStart(ids[1], 16, None, None)
    assert switching.fragment_start(table, ids, 3) is None  # past the bar's end
    assert switching.fragment_start(table, [vocab.bar_id], 1) is None  # no TimeSig
    grammar = Grammar(vocab, allow_sampled_conditions=False)
    state = grammar.state_after(vocab.condition_ids(ROCK_HAPPY) + ids[:2]).from_position(start.first_position)
    allowed = {vocab.id_to_token[i] for i in state.allowed().nonzero().flatten().tolist()}
    assert "Position_8" in allowed and "Position_7" not in allowed and "Position_0" not in allowed
    assert "Bar_None" in allowed  # the rest may be silent


def test_the_queue_cuts_only_the_bar_playing_once_it_is_written_and_hands_the_cut_with_its_rollback(vocab):
    bars = make_bars(vocab, RemiTable(vocab), *["Position_0 Program_0 Pitch_60 Velocity_63 Duration_1.0.8"] * 3)
    queue = BarQueue(size=4)
    for bar in bars:
        queue.put(bar)
    assert queue.cut_at(0, 2, written_upto=3) is None  # bar 0 has not started
    assert queue.take(wait=False).seq == 0
    assert queue.cut_at(0, 2, written_upto=0) is None  # the generator is still on bar 0
    assert queue.cut_at(0, 2, written_upto=3) == 2 and queue.queued() == []
    assert queue.rolled_back(0) and not queue.put(bars[1])
    assert queue.take_rollback_cut() == (0, switching.Cut(0, 2))
    assert queue.take_rollback_cut() == (None, None)
