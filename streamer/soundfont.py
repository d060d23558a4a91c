"""Which General MIDI SoundFont FluidSynth loads: `--soundfont FILE`, else the first .sf2 in the repo's
`soundfonts/` (see its README), else /usr/share/sounds/sf2/ (FluidR3_GM from fluid-soundfont-gm, which
`make run` installs; then TimGM6mb, the small one `make test` installs; then the system default-GM).
None found → a one-line error naming the Debian package to install."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from model.errors import MoodstreamError

REPO_SOUNDFONTS = Path(__file__).resolve().parent.parent / "soundfonts"
SYSTEM_SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
                     Path("/usr/share/sounds/sf2/default-GM.sf2"))
INSTALL_HINT = "install one with `sudo apt-get install fluid-soundfont-gm` (or timgm6mb-soundfont), or pass --soundfont FILE"


def find_soundfont(explicit: Optional[str | Path] = None, repo_dir: Path = REPO_SOUNDFONTS,
                   system: tuple[Path, ...] = SYSTEM_SOUNDFONTS) -> Path:
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MoodstreamError(f"soundfont {path} not found: pass an existing .sf2 file to --soundfont")
        return path
    if repo_dir.is_dir():
        found = sorted(p for p in repo_dir.iterdir() if p.suffix.lower() == ".sf2" and p.is_file())
        if found:
            return found[0]
    for path in system:
        if path.is_file():
            return path
    raise MoodstreamError(f"no General MIDI soundfont found in {repo_dir} or /usr/share/sounds/sf2/: {INSTALL_HINT}")
