"""Outputs behind one protocol (`send`, `panic`, `close`; see `base.py`): null and memory, the recorder,
FluidSynth live and offline render (`synth.py`), an rtmidi port with MIDI clock and external sync (`port.py`).

`open_outputs(names, options)` opens outputs by the names the CLI and the TUI use (fluidsynth, port, null);
each failure is one line, so a caller can go on with the outputs that did open.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Optional

from model.errors import MoodstreamError
from streamer.outputs.base import Output, OutputError, panic_messages

log = logging.getLogger(__name__)

# Probing for JACK (FluidSynth's jack driver, rtmidi's JACK API) must never start a JACK server of its own.
os.environ.setdefault("JACK_NO_START_SERVER", "1")

__all__ = ["Output", "OutputError", "OutputOptions", "OUTPUT_NAMES", "open_output", "open_outputs",
           "parse_output_names", "panic_messages"]

OUTPUT_NAMES = ("fluidsynth", "port", "null")


@dataclass(frozen=True)
class OutputOptions:
    soundfont: Optional[str] = None  # --soundfont; None = look it up (streamer.soundfont)
    driver: str = "auto"  # FluidSynth audio driver: auto, pipewire, pulseaudio, alsa, jack, …
    port: Optional[str] = None  # --port: connect to this existing MIDI port instead of a virtual one
    midi_clock: bool = True  # MIDI clock and transport on the port
    gain: float = 0.3  # FluidSynth master gain


def parse_output_names(text: str | Iterable[str]) -> tuple[str, ...]:
    """'fluidsynth,port' → ('fluidsynth', 'port'); 'none' → (); unknown names → one-line error."""
    parts = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if parts in (["none"], ["both"]):
        return () if parts == ["none"] else ("fluidsynth", "port")
    unknown = [p for p in parts if p not in OUTPUT_NAMES]
    if unknown or not parts:
        shown = ", ".join(repr(p) for p in unknown) or "nothing"
        raise MoodstreamError(f"unknown output {shown}: use one or more of {', '.join(OUTPUT_NAMES)} "
                              f"separated by commas")
    return tuple(dict.fromkeys(parts))


def open_output(name: str, options: OutputOptions = OutputOptions()) -> Output:
    """Open one output by name; MoodstreamError (one line) if it cannot be opened."""
    if name == "null":
        from streamer.outputs.null import NullOutput

        return NullOutput()
    if name == "fluidsynth":
        from streamer.outputs.synth import FluidSynthOutput
        from streamer.soundfont import find_soundfont

        return FluidSynthOutput(find_soundfont(options.soundfont), options.driver, options.gain)
    if name == "port":
        from streamer.outputs.port import PortOutput

        return PortOutput(options.port, clock=options.midi_clock)
    parse_output_names([name])  # raises the error listing the valid names
    raise AssertionError(name)


def open_outputs(names: Iterable[str], options: OutputOptions = OutputOptions()) -> tuple[list[Output], list[str]]:
    """Open each named output; returns (the outputs that opened, one line per one that did not)."""
    outputs, problems = [], []
    for name in names:
        try:
            outputs.append(open_output(name, options))
        except MoodstreamError as err:
            log.debug("output %s: %s", name, err)
            problems.append(str(err))
    return outputs, problems
