"""The README's screenshot: `python -m streamer.tui.screenshot docs/screenshot.svg [--model DIR]`
(`make screenshot`). Runs the real engine headless to the null output until a few bars have played, asks
for a genre switch so a pending one shows, and saves Textual's SVG (to a temp name, then renamed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from model.errors import MoodstreamError

SIZE = (120, 36)
BARS_BEFORE_SHOT = 3
WAIT_S = 120.0


async def _take(pilot, out: Path, genre_key: str) -> None:
    app = pilot.app
    roll = app.query_one("#roll")
    for _ in range(int(WAIT_S / 0.1)):
        await pilot.pause(0.1)
        if roll.playing is not None and roll.playing.index >= BARS_BEFORE_SHOT:
            break
    else:
        app.exit(return_code=1)
        raise MoodstreamError(f"no bar played within {WAIT_S:.0f} s: is the model too slow for real time?")
    await pilot.press(genre_key, "T")
    await pilot.pause(0.5)
    tmp = out.with_name(out.name + ".tmp")
    app.save_screenshot(filename=tmp.name, path=str(tmp.parent))
    tmp.replace(out)
    await app.action_quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .svg to write")
    parser.add_argument("--model", help="checkpoint directory (default: the bundled model)")
    parser.add_argument("--genre", default="jazz")
    parser.add_argument("--mood", default="calm")
    parser.add_argument("--switch-to", default="rock", help="the genre of the pending switch shown")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from streamer.controls import Controls
    from streamer.engine import Engine, EngineConfig
    from streamer.generator import GeneratorConfig
    from streamer.outputs.null import NullOutput
    from streamer.tui import create_app
    from streamer.tui.app import GENRE_LABELS

    try:
        controls = Controls(genre=args.genre, mood=args.mood)
        app = None
        engine = Engine(EngineConfig(model_dir=args.model, generator=GeneratorConfig(seed=args.seed)),
                        [NullOutput()], controls=controls,
                        on_news=lambda news: app is not None and app.post_news(news))
        genres = engine.vocab.genres
        if args.switch_to not in genres:
            raise MoodstreamError(f"unknown genre {args.switch_to!r}; valid genres: {', '.join(genres)}")
        app = create_app(engine, genres, engine.vocab.moods, controls, seed=args.seed, output_request="null")
        key = GENRE_LABELS[genres.index(args.switch_to)]
        app.run(headless=True, size=SIZE, auto_pilot=lambda pilot: _take(pilot, args.out, key))
    except MoodstreamError as err:
        print(f"screenshot: error: {err}", file=sys.stderr)
        return 1
    if app.crash is not None or not args.out.is_file():
        print(f"screenshot: error: no screenshot written ({app.crash or 'see above'})", file=sys.stderr)
        return 1
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
