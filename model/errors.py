"""The one exception type users see: its message is a single line naming the problem and the fix."""


class MoodstreamError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting with a non-zero code."""
