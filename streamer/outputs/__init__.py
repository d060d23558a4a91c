"""Outputs behind one protocol (`send`, `panic`, `close`; see `base.py`): null and memory, the recorder,
FluidSynth live and offline render (`synth.py`), an rtmidi port with MIDI clock and external sync (`port.py`).
"""

from streamer.outputs.base import Output, OutputError, panic_messages

__all__ = ["Output", "OutputError", "panic_messages"]
