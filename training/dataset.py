"""Reading a built dataset directory (see docs/CONTRACTS.md, "Dataset directory").

`TokenDataset(dir)` loads `index.jsonl` and memory-maps the shards; `pieces(split)` lists index rows,
`tokens(row)` returns a piece's REMI ids (uint16 view, no conditioning block), `vocab()` the tokenizer.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from model.errors import MoodstreamError

INDEX_FILE = "index.jsonl"
TOKENIZER_FILE = "tokenizer.json"


class TokenDataset:
    def __init__(self, dataset_dir: str | Path):
        self.dir = Path(dataset_dir)
        index = self.dir / INDEX_FILE
        if not index.is_file():
            raise MoodstreamError(f"{self.dir}: not a built dataset (no {INDEX_FILE}); "
                                  "run `moodstream dataset build --out DIR` first")
        try:
            self.rows: list[dict] = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as err:
            raise MoodstreamError(f"{index}: unreadable index ({err}); rebuild the dataset") from err
        self._shards: dict[str, object] = {}

    def pieces(self, split: str | None = None) -> list[dict]:
        return [r for r in self.rows if split is None or r["split"] == split]

    def tokens(self, row: dict):
        """The piece's token ids as a read-only uint16 view into its shard."""
        import numpy as np

        shard = self._shards.get(row["shard"])
        if shard is None:
            path = self.dir / row["shard"]
            try:
                shard = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise MoodstreamError(f"{path}: shard unreadable ({err}); rebuild the dataset") from err
            self._shards[row["shard"]] = shard
        return shard[row["offset"]:row["offset"] + row["length"]]

    @cached_property
    def vocab(self):
        from model.vocab import Vocab

        return Vocab.load(self.dir / TOKENIZER_FILE)
