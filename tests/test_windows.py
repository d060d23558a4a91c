"""The training window sampler on a tiny real dataset: bar alignment, splices, dropout, weights, resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.vocab import Conditions
from training.build import BuildConfig, build
from training.windows import IGNORE, WindowSampler, piece_probabilities, sampling_mix

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("windows")
    build(BuildConfig(out_dir=out, sources=("emopia", "vgmidi", "nottingham", "groove", "pop909"), data_root=shared_data,
                      workers=1, limit=6, chunk_size=8, progress=False))
    return out


def sampler(dataset, **kw):
    args = dict(split="train", block_size=256, batch_size=4, splice_prob=0.0, cond_dropout=0.0, seed=7)
    return WindowSampler(dataset, **{**args, **kw})


def _bar_index(vocab, window, position):
    """How many Bar tokens come before `position` in the window (= index of the bar that starts there)."""
    return int(sum(1 for t in window[:position] if t == vocab.bar_id))


def test_window_starts_with_block_then_a_bar_of_the_piece(dataset):
    s = sampler(dataset)
    vocab = s.vocab
    for _ in range(20):
        window, segments = s.sample_window()
        first = segments[0]
        row = s.rows[first.piece]
        assert window[0] == vocab.genre_ids[row["genre"]] and window[1] == vocab.mood_ids[row["mood"]]
        assert window[2] == vocab.bar_id
        piece = s.data.tokens(row)
        expected = piece[row["bars"][first.start_bar]:].astype(np.int64)
        body = [t for t in window[2:] if not vocab.is_condition(int(t))]
        if first.start_bar == 0:  # nothing restated at a piece's start: the window is the piece itself
            assert body[:50] == expected[:50].tolist()
        assert vocab.conditions_at_bar(window.tolist(), 0) == Conditions(row["genre"], row["mood"])


def test_mid_piece_windows_restate_the_tempo(dataset):
    s = sampler(dataset)
    vocab = s.vocab
    seen = 0
    for _ in range(60):
        window, segments = s.sample_window()
        if segments[0].start_bar == 0:
            continue
        head = vocab.tokens(window[2:8].tolist())
        assert any(t.startswith("Tempo_") for t in head), head
        row = s.rows[segments[0].piece]
        piece = s.data.tokens(row)
        upto_bar = [vocab.id_to_token[int(t)] for t in piece[:row["bars"][segments[0].start_bar] + 4]]
        tempo = [t for t in head if t.startswith("Tempo_")][0]
        assert tempo == [t for t in upto_bar if t.startswith("Tempo_")][-1]  # the tempo in force there
        seen += 1
    assert seen > 10
    plain = sampler(dataset, restate_tempo=False)
    for _ in range(30):
        window, segments = plain.sample_window()
        row = plain.rows[segments[0].piece]
        piece = plain.data.tokens(row)
        start = row["bars"][segments[0].start_bar]
        n = min(38, row["length"] - start)
        assert window[2:2 + n].tolist() == piece[start:start + n].astype(np.int64).tolist()


def test_splice_windows_carry_the_new_block_at_the_splice_bar(dataset):
    s = sampler(dataset, splice_prob=1.0, block_size=384)
    vocab = s.vocab
    checked = 0
    for _ in range(40):
        window, segments = s.sample_window()
        assert len(segments) >= 2
        a, b = segments[0], segments[1]
        assert (a.genre, a.mood) != (b.genre, b.mood) or len(set(s.labels)) == 1
        assert 0 < b.block_at < len(window)
        # the block sits right before the Bar of the spliced piece
        assert window[b.block_at] == vocab.genre_ids[b.genre] and window[b.block_at + 1] == vocab.mood_ids[b.mood]
        if b.block_at + 2 < len(window):
            assert window[b.block_at + 2] == vocab.bar_id
            splice_bar = _bar_index(vocab, window, b.block_at + 2)
            ids = window.tolist()
            assert vocab.conditions_at_bar(ids, splice_bar) == Conditions(b.genre, b.mood)
            assert vocab.conditions_at_bar(ids, splice_bar - 1) == Conditions(a.genre, a.mood)
            # what follows the block is the second piece from its chosen bar
            row = s.rows[b.piece]
            piece = s.data.tokens(row)
            start = row["bars"][b.start_bar]
            got = [t for t in ids[b.block_at + 2:b.block_at + 40] if not s.is_tempo[t] and t != s.position0]
            want = [t for t in piece[start:start + 38].astype(np.int64).tolist()
                    if not s.is_tempo[t] and t != s.position0]  # minus the restated tempo
            n = min(len(got), len(want), row["length"] - start - 6)
            assert got[:n] == want[:n]
            checked += 1
        # the first piece was cut at one of its own bar lines, in the middle half when its bars allow
        row_a = s.rows[a.piece]
        assert b.block_at - 2 <= row_a["length"] - row_a["bars"][a.start_bar] + 2
    assert checked > 20


def test_no_splice_means_one_block_unless_the_piece_ends(dataset):
    s = sampler(dataset, block_size=128)
    for _ in range(30):
        window, segments = s.sample_window()
        blocks = sum(1 for t in window if s.vocab.is_genre(int(t)))
        assert blocks == len(segments)
        if len(segments) > 1:  # the first piece ran out: it really ended before the window did
            row = s.rows[segments[0].piece]
            assert segments[1].block_at >= row["length"] - row["bars"][segments[0].start_bar]


def test_condition_dropout_is_independent_per_axis_and_joint(dataset):
    s = sampler(dataset, cond_dropout=0.5, splice_prob=0.0)
    vocab = s.vocab
    genre_null = mood_null = both = n = 0
    for _ in range(400):
        window, _ = s.sample_window()
        g, m = int(window[0]), int(window[1])
        genre_null += g == vocab.null_genre_id
        mood_null += m == vocab.null_mood_id
        both += g == vocab.null_genre_id and m == vocab.null_mood_id
        n += 1
    assert vocab.null_genre_id != vocab.genre_ids["any"]  # dropout is not the `any` label
    assert 0.4 < genre_null / n < 0.6 and 0.4 < mood_null / n < 0.6
    assert abs(both / n - (genre_null / n) * (mood_null / n)) < 0.1
    joint = sampler(dataset, cond_dropout=0.0, joint_dropout=0.3)
    blocks = [joint.sample_window()[0][:2].tolist() for _ in range(300)]
    share = sum(b == [vocab.null_genre_id, vocab.null_mood_id] for b in blocks) / len(blocks)
    assert 0.2 < share < 0.4
    assert all((b[0] == vocab.null_genre_id) == (b[1] == vocab.null_mood_id) for b in blocks)
    none = sampler(dataset, cond_dropout=0.0)
    for _ in range(50):
        window, segments = none.sample_window()
        assert int(window[0]) == vocab.genre_ids[segments[0].genre]


def test_batches_shapes_targets_and_ignore(dataset):
    s = sampler(dataset, splice_prob=0.5)
    x, y = s.next_batch()
    assert x.shape == y.shape == (4, 256) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:][y[:, :-1] != IGNORE], y[:, :-1][y[:, :-1] != IGNORE])
    condition = torch.tensor([s.vocab.is_condition(int(t)) for t in x.flatten()]).view_as(x)
    assert (y[:, :-1][condition[:, 1:]] == IGNORE).all()  # switches are not predicted
    assert (y != IGNORE).float().mean() > 0.9


def test_same_seed_same_stream_and_exact_resume(dataset):
    a, b = sampler(dataset, splice_prob=0.5, cond_dropout=0.2), sampler(dataset, splice_prob=0.5, cond_dropout=0.2)
    for _ in range(3):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    state = a.state_dict()
    later = [a.next_batch() for _ in range(3)]
    fresh = sampler(dataset, splice_prob=0.5, cond_dropout=0.2, seed=999)
    fresh.load_state_dict(state)
    for want in later:
        got = fresh.next_batch()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    other = sampler(dataset, splice_prob=0.5, cond_dropout=0.2, seed=8)
    assert not torch.equal(other.next_batch()[0], sampler(dataset, splice_prob=0.5, cond_dropout=0.2).next_batch()[0])


def test_weights_flatten_cells_and_can_be_overridden(dataset):
    s = sampler(dataset)
    rows = s.rows
    flat = piece_probabilities(rows, alpha=0.0)
    cells = {(r["genre"], r["mood"]) for r in rows}
    per_cell = {}
    for r, p in zip(rows, flat):
        per_cell[(r["genre"], r["mood"])] = per_cell.get((r["genre"], r["mood"]), 0) + p
    assert all(abs(p - 1 / len(cells)) < 1e-9 for p in per_cell.values())  # alpha 0: every cell alike
    proportional = piece_probabilities(rows, alpha=1.0)
    total = sum(r["length"] for r in rows)
    assert np.allclose(proportional, [r["length"] / total for r in rows])  # alpha 1: by tokens
    no_groove = piece_probabilities(rows, weights={"source": {"groove": 0.0}})
    assert all(p == 0 for r, p in zip(rows, no_groove) if r["source"] == "groove")
    mix = sampling_mix(dataset, "train", weights={"genre": {"folk": 0.0}})
    assert mix["genre"].get("folk", 0) == 0 and abs(sum(mix["source"].values()) - 1) < 1e-3
    with pytest.raises(Exception, match="unknown key"):
        piece_probabilities(rows, weights={"decade": {"80s": 1}})


def test_validation_split_and_errors(dataset):
    val = sampler(dataset, split="validation")
    assert all(r["split"] == "validation" for r in val.rows)
    from model.errors import MoodstreamError

    with pytest.raises(MoodstreamError, match="splice_prob"):
        sampler(dataset, splice_prob=1.5)
    with pytest.raises(MoodstreamError, match="no pieces in split"):
        sampler(dataset, split="test")
    with pytest.raises(MoodstreamError, match="not a built dataset"):
        WindowSampler(dataset / "nowhere", "train", 64, 2)


def _blocks_before_bars(vocab, window):
    """(block, index of its Bar) for each Bar of the window that has a whole block before it."""
    return [((int(window[k - 2]), int(window[k - 1])), k) for k in range(2, len(window)) if window[k] == vocab.bar_id]


def test_bar_blocks_put_the_conditions_before_every_bar(dataset):
    s = sampler(dataset, bar_blocks=True, splice_prob=1.0, max_switches=3, one_axis_share=0.5, block_size=512)
    vocab = s.vocab
    for _ in range(30):
        window, segments = s.sample_window()
        starts = [seg.block_at for seg in segments] + [len(window)]
        for seg, end in zip(segments, starts[1:]):
            want = (vocab.genre_ids[seg.genre], vocab.mood_ids[seg.mood])
            bars = [k for block, k in _blocks_before_bars(vocab, window) if seg.block_at < k < end]
            assert bars and all((int(window[k - 2]), int(window[k - 1])) == want for k in bars)
        assert all(k >= 2 and vocab.is_genre(int(window[k - 2])) and vocab.is_mood(int(window[k - 1]))
                   for k, t in enumerate(window) if t == vocab.bar_id)


def test_bar_blocks_teach_the_end_of_a_bar(dataset):
    s = sampler(dataset, bar_blocks=True, splice_prob=0.5, max_switches=3)
    x, y = s.next_batch()
    genre = torch.tensor([s.vocab.is_genre(int(t)) for t in x.flatten()]).view_as(x)
    # the token before each block learns `Bar`; the block's own targets are not learned
    before_block = genre[:, 1:] & (x[:, :-1] != s.pad_id)
    assert before_block.sum() > 8
    assert (y[:, :-1][before_block] == s.vocab.bar_id).all()
    assert (y[genre] == IGNORE).all()


def test_several_switches_half_of_them_on_one_axis(dataset):
    s = sampler(dataset, bar_blocks=True, splice_prob=1.0, max_switches=3, one_axis_share=0.5, block_size=1024)
    one_axis = both_axes = windows_with_many = 0
    for _ in range(120):
        _, segments = s.sample_window()
        windows_with_many += len(segments) > 2
        for a, b in zip(segments, segments[1:]):
            one_axis += (a.genre == b.genre) != (a.mood == b.mood)
            both_axes += a.genre != b.genre and a.mood != b.mood
    assert windows_with_many > 20
    assert 0.3 < one_axis / (one_axis + both_axes) < 0.75  # pieces that end switch on both axes too


def test_window_dropout_holds_for_every_bar_of_a_window(dataset):
    s = sampler(dataset, bar_blocks=True, cond_dropout=0.5, splice_prob=1.0, max_switches=3)
    vocab = s.vocab
    mixed = 0
    for _ in range(60):
        window, _ = s.sample_window()
        blocks = [block for block, _ in _blocks_before_bars(vocab, window)]
        genres_null = {g == vocab.null_genre_id for g, _ in blocks}
        moods_null = {m == vocab.null_mood_id for _, m in blocks}
        assert len(genres_null) == 1 and len(moods_null) == 1
        mixed += genres_null != moods_null
    assert mixed > 10


def test_generated_music_is_capped(dataset):
    rows = sampler(dataset).rows
    fake = [dict(r, source="mma") if r["source"] == "pop909" else r for r in rows]  # pretend pop909 was generated
    free = piece_probabilities(fake)
    capped = piece_probabilities(fake, generated_cap=0.1)
    share = lambda p: sum(q for r, q in zip(fake, p) if r["source"] == "mma")  # noqa: E731
    assert share(free) > 0.1 and abs(share(capped) - 0.1) < 1e-9 and abs(capped.sum() - 1) < 1e-9
    assert np.allclose(piece_probabilities(fake, generated_cap=0.99), free)  # a cap above the share changes nothing


def test_window_moods_label_derived_parts_by_their_own_music(dataset):
    from model.remi import RemiTable
    from training.labels import derive_mood, notes_evidence
    from training.musicstats import parse_notes

    plain = sampler(dataset, seed=3, splice_prob=0.5)
    local = sampler(dataset, seed=3, splice_prob=0.5, window_moods=True)
    vocab, table = local.vocab, RemiTable(local.vocab)
    relabelled = human = 0
    for _ in range(60):
        local.rng.bit_generator.state = plain.rng.bit_generator.state  # the same draws up to the first part
        (w0, segs0), (w1, segs1) = plain.sample_window(), local.sample_window()
        assert (segs0[0].piece, segs0[0].start_bar) == (segs1[0].piece, segs1[0].start_bar)
        first, row = segs1[0], local.rows[segs1[0].piece]
        end = segs1[1].block_at if len(segs1) > 1 else len(w1)
        evidence = notes_evidence(parse_notes(table, w1[:end].tolist()))
        if row["mood_origin"] != "derived" or evidence is None:
            assert first.mood == row["mood"]  # a human label, or too little music to judge, stays
            human += row["mood_origin"] == "human"
        else:
            assert first.mood == derive_mood(evidence)
            relabelled += first.mood != row["mood"]
        assert w1[1] == vocab.mood_ids[first.mood] and vocab.conditions_at_bar(w1.tolist(), 0).mood == first.mood
        genre_and_music = [t for k, t in enumerate(w1[:end]) if k != 1]
        assert genre_and_music == [t for k, t in enumerate(w0[:end]) if k != 1]  # only the mood token differs
    assert relabelled > 0 and human > 0
