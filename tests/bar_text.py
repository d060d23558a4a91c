"""Bars from REMI token text, as the generator would queue them."""

from __future__ import annotations

from streamer.bars import Bar, BarConfig, BarState, bar_messages, parse_bar


def make_bars(vocab, table, *bars: str, config=BarConfig()) -> list[Bar]:
    """One 4/4 `Bar` per text (the tokens after `Bar_None TimeSig_4/4`), seq 0, 1, ..., state carried."""
    state = BarState()
    out = []
    for seq, text in enumerate(bars):
        ids = [vocab.token_to_id[t] for t in f"Bar_None TimeSig_4/4 {text}".split()]
        messages, state = bar_messages(parse_bar(table, ids), state, config)
        out.append(Bar(seq, messages, tuple(ids)))
    return out
