"""What reaches the UI from other threads, as Textual messages.

`News` carries one of the engine's news objects (BarStarted, SwitchPending, Underrun, OutputFailed, …)
unchanged; `Notice` carries one line of text (a log warning, a problem and what to do); `OutputsSet`
reports a finished output switch. Background threads only ever `App.post_message` these (thread-safe,
never blocks); the app's handlers run on the UI thread.
"""

from __future__ import annotations

from textual.message import Message


class News(Message):
    """One piece of engine news (a frozen dataclass from `streamer.engine`)."""

    def __init__(self, news: object):
        super().__init__()
        self.news = news


class Notice(Message):
    """One line for the notice bar. `level`: error, warning or info."""

    def __init__(self, text: str, level: str = "error"):
        super().__init__()
        self.text = text
        self.level = level


class OutputsSet(Message):
    """`Engine.set_outputs` returned: one line per output that could not be opened."""

    def __init__(self, problems: list[str]):
        super().__init__()
        self.problems = problems
