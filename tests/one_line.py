"""A bad input file must fail as one line (MoodstreamError) that names the file and the problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

from model.errors import MoodstreamError


def assert_one_line_error(load: Callable[[Path], object], path: Path, text: str, message: str) -> None:
    """Write `text` to `path`, then `load(path)` must raise a one-line MoodstreamError containing `message`
    (literally) and the path."""
    path.write_text(text)
    with pytest.raises(MoodstreamError, match=re.escape(message)) as caught:
        load(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
