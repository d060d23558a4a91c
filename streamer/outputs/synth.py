"""FluidSynth outputs: `FluidSynthOutput` plays live through an audio driver (auto: pipewire, pulseaudio,
alsa, jack — or one named), checked to have really opened (pyfluidsynth's `start()` returns 0 even when it
fails); `FluidSynthRender` renders offline to a WAV file on the scheduler clock's time line (no driver).
Channel 9 is the drum channel (bank 128); the SoundFont comes from `streamer.soundfont.find_soundfont`.
"""

from __future__ import annotations

import logging
import os
import wave
from pathlib import Path

import mido

from model.errors import MoodstreamError
from streamer.outputs.base import Output, OutputError, quiet_stderr
from streamer.outputs.recorder import check_writable, temp_path

log = logging.getLogger(__name__)

AUTO_DRIVERS = ("pipewire", "pulseaudio", "alsa", "jack")
DRUM_BANK = 128


class _FluidSynth(Output):
    """A FluidSynth synthesizer with a SoundFont loaded; MIDI messages drive it directly."""

    def __init__(self, soundfont: str | Path, gain: float = 0.3, sample_rate: int = 44100):
        super().__init__()
        import fluidsynth

        self._fluidsynth = fluidsynth
        self.soundfont = Path(soundfont)
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(gain=gain, samplerate=float(sample_rate))
        with quiet_stderr() as captured:
            sfid = self.synth.sfload(str(self.soundfont))
        if sfid < 0:
            self.synth.delete()
            reason = captured.first_error() or "not a SoundFont"
            raise MoodstreamError(f"soundfont {self.soundfont} could not be loaded ({reason}): "
                                  f"pass a General MIDI .sf2 file to --soundfont")
        for channel in range(16):
            self.synth.program_select(channel, sfid, DRUM_BANK if channel == 9 else 0, 0)

    def _send(self, msg: mido.Message) -> None:
        kind = msg.type
        if kind == "note_on":
            self.synth.noteon(msg.channel, msg.note, msg.velocity)
        elif kind == "note_off":
            self.synth.noteoff(msg.channel, msg.note)
        elif kind == "program_change":
            self.synth.program_change(msg.channel, msg.program)
        elif kind == "control_change":
            self.synth.cc(msg.channel, msg.control, msg.value)
        elif kind == "pitchwheel":
            self.synth.pitch_bend(msg.channel, msg.pitch)

    def _close(self) -> None:
        self.synth.delete()


class FluidSynthOutput(_FluidSynth):
    """Live audio. Raises MoodstreamError naming every driver tried when none opens a device. Through JACK,
    a server that stops fails the output (the scheduler reports it; notes would otherwise vanish silently)
    and a new audio driver is opened when a server runs again (`reconnected()`)."""

    name = "fluidsynth"

    def __init__(self, soundfont: str | Path, driver: str = "auto", gain: float = 0.3, sample_rate: int = 44100,
                 reconnect_interval_s: float = 1.0):
        super().__init__(soundfont, gain, sample_rate)
        self._watch = None
        self._reconnector = None
        self._reconnect_interval_s = reconnect_interval_s
        self._dead_drivers: list = []  # drivers of a JACK server that went away: deleting them crashes libjack
        tried = []
        for name in (AUTO_DRIVERS if driver == "auto" else (driver,)):
            self.synth.setting("audio.driver", name)
            with quiet_stderr() as captured:
                handle = self._fluidsynth.new_fluid_audio_driver(self.synth.settings, self.synth.synth)
            if handle:
                self.synth.audio_driver = handle  # Synth.delete() frees it
                self.driver = name
                self._watch_jack()
                log.info("FluidSynth plays through %s with %s", name, self.soundfont.name)
                return
            tried.append(f"{name}: {_short_reason(captured.first_error())}")
        self.synth.delete()
        raise MoodstreamError(f"FluidSynth could not open an audio device (tried {'; '.join(tried)}): "
                              f"start PipeWire, PulseAudio or JACK, or use --output port / null")

    def _watch_jack(self) -> None:
        from streamer.outputs.port import JackWatch

        self.can_reconnect = self.driver == "jack"
        self._watch = JackWatch("moodstream-synth-watch") if self.driver == "jack" else None

    def _server_gone(self) -> bool:
        return self._watch is not None and self._watch.gone.is_set()

    def _send(self, msg: mido.Message) -> None:
        if self._server_gone():
            if self._reconnector is None:
                from streamer.outputs.port import Reconnector

                self._reconnector = Reconnector("fluidsynth", self._reopen, self._reconnect_interval_s)
            raise OutputError("the JACK server stopped, so FluidSynth has no audio device: restart JACK "
                              "(FluidSynth comes back by itself)")
        super()._send(msg)

    def _reopen(self) -> None:
        self.synth.setting("audio.driver", "jack")
        with quiet_stderr() as captured:
            handle = self._fluidsynth.new_fluid_audio_driver(self.synth.settings, self.synth.synth)
        if not handle:
            raise OutputError(captured.first_error() or "no audio driver")
        self._dead_drivers.append(self.synth.audio_driver)
        self.synth.audio_driver = handle
        self._watch_jack()

    def _close(self) -> None:
        if self._reconnector is not None:
            self._reconnector.stop()
        if self._server_gone():
            self.synth.audio_driver = None  # its server is gone: deleting it can crash libjack
        elif self._watch is not None:
            self._watch.close()
        super()._close()


def _short_reason(text: str) -> str:
    """FluidSynth's driver error, in a few words."""
    known = (("Couldn't find the requested audio driver", "not in this FluidSynth build"),
             ("Connection refused", "no server running"), ("Failed to connect to Jack", "no server running"),
             ("Failed to open the", "no device"), ("not initialized", "not available"))
    for pattern, short in known:
        if pattern.lower() in text.lower():
            return short
    return text or "failed"


class FluidSynthRender(_FluidSynth):
    """Offline audio to a 16-bit stereo WAV: before each message, renders up to the clock's time."""

    name = "wav"

    def __init__(self, path: str | Path, soundfont: str | Path, clock, tail_s: float = 2.0, gain: float = 0.3,
                 sample_rate: int = 44100):
        self.path = check_writable(Path(path), "output")
        super().__init__(soundfont, gain, sample_rate)
        self.clock = clock
        self.tail_s = tail_s
        self._origin_s: float | None = None
        self._last_s = 0.0
        self.frames = 0
        self._tmp = temp_path(self.path)
        self._wav = wave.open(str(self._tmp), "wb")
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    def render_until(self, t_s: float) -> None:
        """Write audio up to clock time `t_s` (the first message sets time zero)."""
        if self._origin_s is None:
            self._origin_s = t_s
        self._last_s = max(self._last_s, t_s)
        target = round((t_s - self._origin_s) * self.sample_rate)
        while self.frames < target:
            chunk = min(target - self.frames, 8192)
            self._wav.writeframes(self.synth.get_samples(chunk).tobytes())
            self.frames += chunk

    def _send(self, msg: mido.Message) -> None:
        self.render_until(self.clock.now())
        super()._send(msg)

    def discard(self) -> None:
        """Close without writing the file (the render never started)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._wav.close()
            self._tmp.unlink(missing_ok=True)
        finally:
            super()._close()

    def _close(self) -> None:
        try:
            if self._origin_s is not None:
                self.render_until(self._last_s + self.tail_s)
            self._wav.close()
            os.replace(self._tmp, self.path)
            log.info("wrote %s (%.1f s of audio)", self.path, self.frames / self.sample_rate)
        finally:
            super()._close()
