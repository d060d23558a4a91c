"""The terminal instrument (Textual): `create_app(engine, genres, moods, controls, …)` builds the App that
`moodstream play` runs; `UiLogHandler` shows log warnings on its notice line."""

from streamer.tui.app import MoodstreamApp, UiLogHandler, create_app

__all__ = ["MoodstreamApp", "UiLogHandler", "create_app"]
