"""Shared fixtures: where the real data lives, a vocabulary, a scratch dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _find_shared_data() -> Path:
    env = os.environ.get("MOODSTREAM_DATA")
    if env:
        return Path(env)
    for parent in REPO.parents:
        candidate = parent / "shared" / "data"
        if (candidate / "manifest.csv").is_file():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.fail(f"real data not found at {SHARED_DATA}; set MOODSTREAM_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vocab():
    from model.vocab import Vocab

    return Vocab.create()
