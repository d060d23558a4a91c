"""Random and adversarial token sequences (hypothesis) through the grammar, the bar → messages conversion
and the scheduler: never a crash, never a stuck note, never a message outside MIDI ranges.

The scheduler runs on a scripted fake clock: panics, tempo overrides, MIDI clock toggles, outputs joining
and leaving and stops happen between events at drawn times, as commands from another thread would.
"""

from __future__ import annotations

import functools
import random
import threading

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.grammar import Grammar, GrammarError
from model.vocab import Conditions
from streamer.barqueue import BarQueue
from streamer.bars import (DRUM_CHANNEL, Bar, BarConfig, BarState, RemiTable, apply_tempo_override, bar_messages,
                           parse_bar)
from streamer.clock import FakeClock
from streamer.outputs.null import MemoryOutput
from streamer.news import PlaybackStopped
from streamer.scheduler import Scheduler, SchedulerConfig

def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def table(vocab):
    return RemiTable(vocab)


@pytest.fixture(scope="module")
def grammar(vocab):
    return Grammar(vocab, allow_sampled_conditions=False)


# ---- checks ---------------------------------------------------------------------------------------------
def check_message(msg) -> None:
    """Inside MIDI ranges and encodable."""
    if msg.is_meta:
        assert msg.type == "set_tempo" and 1 <= mido.tempo2bpm(msg.tempo) <= 1000, msg
        return
    for attr, high in (("channel", 15), ("note", 127), ("velocity", 127), ("program", 127), ("control", 127),
                       ("value", 127)):
        value = getattr(msg, attr, None)
        assert value is None or 0 <= value <= high, msg
    assert mido.Message.from_bytes(msg.bytes()) == msg.copy(time=0)


def check_bar_messages(bar) -> None:
    """Sorted, in range, every note_on followed by its own note_off inside the bar's messages."""
    keys = [m.sort_key for m in bar.messages]
    assert keys == sorted(keys)
    open_notes: dict[tuple[int, int], int] = {}
    for timed in bar.messages:
        msg = timed.message
        check_message(msg)
        assert timed.offset_beats >= 0
        if msg.type == "note_on":
            assert msg.velocity >= 1
            open_notes[(msg.channel, msg.note)] = open_notes.get((msg.channel, msg.note), 0) + 1
        elif msg.type == "note_off":
            key = (msg.channel, msg.note)
            assert open_notes.get(key, 0) > 0, f"note_off before its note_on: {timed}"
            open_notes[key] -= 1
    assert not any(open_notes.values())
    assert bar.messages[0].message.type == "set_tempo" and bar.messages[0].offset_beats == 0
    for note in bar.notes:
        assert 0 < note.duration_beats <= BarConfig().max_note_beats


def check_played(log, name: str = "output") -> None:
    """What an output was sent: in range, beats never going back, no note_on on a sounding key, and
    nothing left sounding at the end."""
    sounding: set[tuple[int, int]] = set()
    last_beat = 0.0
    for _, msg in log:
        check_message(msg)
        panic = msg.type == "control_change" and msg.control in (120, 123)
        if not panic:  # the panic's CCs carry no position
            assert msg.time >= last_beat - 1e-9, f"{name}: time went back to {msg}"
            last_beat = max(last_beat, msg.time)
        if msg.type == "note_on" and msg.velocity:
            key = (msg.channel, msg.note)
            assert key not in sounding, f"{name}: {msg} on a sounding key (no note_off first)"
            sounding.add(key)
        elif msg.type in ("note_on", "note_off"):
            sounding.discard((msg.channel, msg.note))
    assert not sounding, f"{name}: left sounding {sorted(sounding)}"


# ---- strategies ---------------------------------------------------------------------------------------
class Walker:
    """Walks bars the grammar accepts, with a weight per token kind (an adversarial model's preferences)."""

    def __init__(self, vocab, grammar):
        import torch

        self.vocab, self.grammar = vocab, grammar
        self.kinds = [token.split("_")[0] for token in vocab.id_to_token]
        self.positions = torch.tensor([kind == "Position" for kind in self.kinds])
        self.position_value = {i: int(t.split("_")[1]) for i, t in enumerate(vocab.id_to_token) if self.kinds[i] == "Position"}
        self.opening = vocab.condition_ids(Conditions()) + [vocab.bar_id]

    def walk(self, seed: int, max_tokens: int, bias: dict, smallest_step: bool = False) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        weights = torch.tensor([float(bias.get(kind, 1.0)) for kind in self.kinds])
        weights[self.vocab.bar_id] = 0.0
        state = self.grammar.start().advance_all(self.opening)
        ids = [self.vocab.bar_id]
        while len(ids) < max_tokens:
            allowed = state.allowed()
            if state.at_bar_boundary and torch.rand(1, generator=generator).item() < bias.get("end", 0.0):
                break
            p = weights * allowed
            if p.sum() <= 0:  # only a bar line may come
                break
            token = int(torch.multinomial(p, 1, generator=generator))
            if smallest_step and self.kinds[token] == "Position":
                token = min((allowed & self.positions).nonzero().flatten().tolist(), key=self.position_value.get)
            state = state.advance(token)
            ids.append(token)
        while not state.at_bar_boundary:  # finish the note being written
            token = next(t for t in state.allowed().nonzero().flatten().tolist() if t != self.vocab.bar_id)
            state = state.advance(token)
            ids.append(token)
        return ids


@pytest.fixture(scope="module")
def walker(vocab, grammar):
    return Walker(vocab, grammar)


BIASES = st.fixed_dictionaries({
    "Program": st.sampled_from([0.2, 1.0, 20.0]), "Position": st.sampled_from([0.05, 1.0, 5.0]),
    "Tempo": st.sampled_from([0.0, 1.0, 10.0]), "TimeSig": st.sampled_from([0.1, 1.0]),
    "end": st.sampled_from([0.0, 0.05, 0.5]),
})


def any_ids(vocab):
    """Arbitrary ids, in the vocabulary and out of it."""
    return st.lists(st.one_of(st.integers(0, vocab.vocab_size - 1), st.integers(-3, vocab.vocab_size + 3)),
                    max_size=300)


# ---- the grammar --------------------------------------------------------------------------------------
@fuzz(60)
@given(seed=st.integers(0, 2**32 - 1), legal_share=st.floats(0, 1), steps=st.integers(1, 400))
def test_grammar_takes_any_ids_raising_only_grammar_errors_and_agrees_with_its_mask(vocab, grammar, seed,
                                                                                     legal_share, steps):
    rng = random.Random(seed)
    state = grammar.start()
    for _ in range(steps):
        allowed = state.allowed()
        assert allowed.any()  # never empty
        if rng.random() < legal_share:
            token = rng.choice(allowed.nonzero().flatten().tolist())
        else:
            token = rng.randint(-3, vocab.vocab_size + 3)
        try:
            new = state.advance(token)
        except GrammarError:
            assert not 0 <= token < vocab.vocab_size or not bool(allowed[token])
            continue
        assert 0 <= token < vocab.vocab_size
        assert bool(allowed[token]) or vocab.is_condition(token)  # a forced block is the only exception
        state = new


@fuzz(25)
@given(seed=st.integers(0, 2**32 - 1), bias=BIASES, smallest_step=st.booleans())
def test_an_adversarial_walk_always_reaches_a_bar_end(vocab, grammar, table, walker, seed, bias, smallest_step):
    """Whatever the model prefers (endless notes, the smallest position steps, tempo changes), the mask
    leaves only a bar line after finitely many tokens, and that monster bar still gives valid messages."""
    ids = walker.walk(seed, max_tokens=1_000_000, bias={**bias, "end": 0.0}, smallest_step=smallest_step)
    state = grammar.start().advance_all(walker.opening[:-1] + ids)
    assert state.at_bar_boundary
    assert [vocab.id_to_token[t] for t in state.allowed().nonzero().flatten().tolist()] == ["Bar_None"]
    most_positions = max(grammar.token_value[t] for t in range(vocab.vocab_size) if walker.kinds[t] == "TimeSig")
    assert len(ids) <= 2 + most_positions * (2 + 4 * grammar.max_notes_per_position)
    parsed = parse_bar(table, ids)
    assert len(parsed.notes) == sum(1 for t in ids if walker.kinds[t] == "Duration")  # no note dropped
    messages, _ = bar_messages(parsed)
    check_bar_messages(messages)


# ---- bar → messages -----------------------------------------------------------------------------------
@fuzz(60)
@given(data=st.data())
def test_any_sequence_of_bars_keeps_midi_rules_with_state_carried(vocab, table, walker, data):
    """Bars in a row, legal or not (adversarial: > 15 programs, drums, tempo jumps, overlapping keys),
    with the channel/tempo state carried from bar to bar: valid, closed, in-range messages every time."""
    state = BarState()
    config = BarConfig()
    programs_seen = set()
    for kind in data.draw(st.lists(st.sampled_from(["legal", "random"]), min_size=1, max_size=6)):
        if kind == "legal":
            ids = walker.walk(data.draw(st.integers(0, 2**32 - 1)), max_tokens=data.draw(st.integers(4, 600)),
                              bias=data.draw(BIASES))
        else:
            ids = data.draw(any_ids(vocab))
        messages, state = bar_messages(parse_bar(table, ids), state, config)
        check_bar_messages(messages)
        programs_seen |= {n.program for n in messages.notes}
        channels = [c for c, _, _ in state.programs]
        assert len(channels) == len(set(channels)) <= 15 and DRUM_CHANNEL not in channels
        for timed in messages.messages:
            if timed.message.type in ("note_on", "note_off") and timed.message.channel == DRUM_CHANNEL:
                assert any(n.program < 0 for n in messages.notes)
        bpm = data.draw(st.one_of(st.none(), st.floats(20, 300)))
        if bpm is not None:
            overridden = apply_tempo_override(messages.messages, bpm)
            assert [m.message.type for m in overridden].count("set_tempo") == 1


# ---- the scheduler --------------------------------------------------------------------------------------
class ScriptedClock(FakeClock):
    """A FakeClock that runs `script` [(time_s, fn)] in the scheduler's thread between events, at their
    times, as commands from another thread would land (the scheduler wakes and looks again)."""

    def __init__(self, script):
        super().__init__()
        self.script = sorted(script, key=lambda item: item[0])

    def sleep_until(self, due_s: float, wake: threading.Event) -> bool:
        if self.script and self.script[0][0] <= due_s:
            at_s, fn = self.script.pop(0)
            with self._lock:
                self._now_s = max(self._now_s, at_s)
            fn()
            return False
        return super().sleep_until(due_s, wake)


OPS = st.sampled_from(["panic", "bpm", "model_bpm", "clock_off", "clock_on", "join", "leave", "stop"])


@fuzz(40)
@given(data=st.data())
def test_scheduler_never_leaves_a_note_sounding_whatever_happens_when(vocab, table, walker, data):
    bars, state = [], BarState()
    for seq in range(data.draw(st.integers(1, 5))):
        if data.draw(st.booleans()):
            ids = walker.walk(data.draw(st.integers(0, 2**32 - 1)), max_tokens=data.draw(st.integers(4, 400)),
                              bias=data.draw(BIASES))
        else:
            ids = data.draw(any_ids(vocab))
        messages, state = bar_messages(parse_bar(table, ids), state)
        bars.append(Bar(seq, messages, tuple(ids)))
    total_s = sum(b.length_beats for b in bars) * 60.0 / 20.0  # at the slowest tempo
    ops = data.draw(st.lists(st.tuples(st.floats(0, total_s), OPS, st.floats(20, 300), st.booleans(),
                                       st.integers(0, 15)), max_size=10))
    wait = data.draw(st.booleans())  # renders wait for bars; live play bridges gaps with silent bars

    queue = BarQueue(len(bars) + 1)
    main = MemoryOutput(name="main", wants_clock=True, wants_meta=True)
    outputs = {"main": main}
    news = []
    holder = {}

    def run(op: str, bpm: float, flag: bool, index: int):  # in the scheduler's thread, between events
        scheduler = holder["scheduler"]
        if op == "panic":
            scheduler.panic()
        elif op == "bpm":
            scheduler.set_bpm(bpm)
        elif op == "model_bpm":
            scheduler.set_bpm(None)
        elif op in ("clock_on", "clock_off"):
            scheduler.set_midi_clock(op == "clock_on")
        elif op == "join":
            name = f"joined{len(outputs)}"
            outputs[name] = MemoryOutput(name=name, wants_clock=flag, wants_meta=True)
            scheduler.add_output(outputs[name])
        elif op == "leave":
            names = [o.name for o in scheduler.outputs]
            if names:
                scheduler.remove_output(names[index % len(names)])
        elif op == "stop":
            scheduler.stop()

    clock = ScriptedClock([(at_s, functools.partial(run, *args)) for at_s, *args in ops])
    scheduler = Scheduler(queue, [main], clock, SchedulerConfig(wait_for_bars=wait, start_delay_s=0.0,
                                                                 max_bars=len(bars)), notify=news.append)
    holder["scheduler"] = scheduler
    feeder_bars = list(bars)
    queue.put(feeder_bars.pop(0))  # the first bar must be there (pre-roll); the rest may come late

    def feed():
        for bar in feeder_bars:
            queue.put(bar)

    feeder = threading.Thread(target=feed, daemon=True)
    scheduler.start()
    feeder.start()
    assert scheduler.finished.wait(60), "the scheduler did not finish"
    scheduler.stop()
    feeder.join(5)
    stopped = [n for n in news if isinstance(n, PlaybackStopped)]
    assert len(stopped) == 1 and stopped[0].reason in ("bars", "stopped"), stopped
    for name, output in outputs.items():
        check_played(output.log, name)
    assert len(scheduler.sounding) == 0
    played = scheduler.stats().bars_played
    assert played <= len(bars)
    clocks = [m for m in main.messages if m.type == "clock"]
    assert all(m.time * 24 == pytest.approx(round(m.time * 24)) for m in clocks)  # pulses on the 24-per-beat grid
