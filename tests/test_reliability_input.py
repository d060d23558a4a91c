"""Bad input, through the real CLI where the user meets it: one line on stderr naming the problem and the
fix, no traceback, exit code 1 where the command cannot go on, and nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jack_fixture import jack_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "moodstream"
NO_JACK = {"JACK_DEFAULT_SERVER": f"moodstream-absent-{os.getpid()}", "JACK_NO_START_SERVER": "1"}

# `moodstream` with the soundfont lookup pointed at empty places (as on a machine with no soundfont package)
NO_SOUNDFONT = """
import sys
from pathlib import Path
import streamer.soundfont as soundfont
soundfont.find_soundfont.__defaults__ = (None, Path(sys.argv[1]), ())
from streamer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def moodstream(*args, env=None, timeout=300):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def one_line_error(out, *fragments: str, code: int = 1) -> str:
    """The stderr's only error line (play prints a 'loading' line first), checked for `fragments`."""
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("moodstream: loading")]
    assert len(lines) == 1 and lines[0].startswith("moodstream: error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def only(folder: Path, *names: str) -> None:
    """Nothing but `names` in `folder` (no output, no .part file)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return str(tiny_model_dir)


# ---- genre and mood -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["stream", "render", "play"])
@pytest.mark.parametrize("flag,value,listing", [
    ("--genre", "polka", "unknown genre 'polka'; valid genres: any, pop, rock, jazz"),
    ("--mood", "ecstatic", "unknown mood 'ecstatic'; valid moods: any, happy, tense, sad, calm"),
])
def test_unknown_genre_or_mood_lists_the_valid_ones(model, tmp_path, command, flag, value, listing):
    extra = {"stream": ["--output", "null", "--record", tmp_path / "t.mid"],
             "render": ["--bars", "2", "-o", tmp_path / "t.mid"], "play": ["--output", "null"]}[command]
    one_line_error(moodstream(command, "--model", model, flag, value, *extra), listing)
    only(tmp_path)


def test_unknown_switch_target_in_render(model, tmp_path):
    one_line_error(moodstream("render", "--model", model, "--bars", "8", "--switch", "4:jazz:ecstatic",
                              "-o", tmp_path / "t.mid"), "unknown mood 'ecstatic'; valid moods:")
    only(tmp_path)


@pytest.mark.parametrize("command", ["stream", "render", "play"])
def test_a_bad_switch_context_is_one_line(model, tmp_path, command):
    extra = {"stream": ["--output", "null", "--record", tmp_path / "t.mid"],
             "render": ["--bars", "2", "-o", tmp_path / "t.mid"], "play": ["--output", "null"]}[command]
    one_line_error(moodstream(command, "--model", model, "--switch-context", "two", *extra),
                   "--switch-context 'two': use a whole number of bars")
    only(tmp_path)


# ---- checkpoints --------------------------------------------------------------------------------------
def broken_checkpoint(source: str, folder: Path, how: str) -> Path:
    target = folder / f"model-{how}"
    shutil.copytree(source, target)
    weights, config, tokenizer = target / "model.safetensors", target / "model.json", target / "tokenizer.json"
    if how == "no-weights":
        weights.unlink()
    elif how == "no-tokenizer":
        tokenizer.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif how == "other-vocabulary":
        from model.vocab import Vocab

        Vocab.create(["any", "pop", "rock"], ["any", "happy"]).save(tokenizer)
    elif how == "other-shape":
        meta = json.loads(config.read_text())
        meta["config"]["n_embd"] = 32
        config.write_text(json.dumps(meta))
    elif how == "garbage-config":
        config.write_text("{not json")
    return target


@pytest.mark.parametrize("how,message", [
    ("no-weights", "model.safetensors: missing from the checkpoint; re-save it with `moodstream train`"),
    ("no-tokenizer", "tokenizer.json: vocabulary file not found; restore it"),
    ("truncated", "model.safetensors: corrupt or truncated weights"),
    ("other-vocabulary", "tokenizer.json: vocabulary does not match the one the model was trained with"),
    ("other-shape", "wte.weight has vocabulary size ({V}, 64), config says ({V}, 32)"),
    ("garbage-config", "model.json: unreadable JSON"),
])
def test_a_broken_checkpoint_is_one_line_and_nothing_is_written(model, vocab, tmp_path, how, message):
    message = message.replace("{V}", str(vocab.vocab_size))
    broken = broken_checkpoint(model, tmp_path, how)
    runs = tmp_path / "out"
    runs.mkdir()
    one_line_error(moodstream("stream", "--model", broken, "--output", "null", "--record",
                              runs / "s.mid"), message)
    one_line_error(moodstream("render", "--model", broken, "--bars", "2", "-o", runs / "r.wav"), message)
    one_line_error(moodstream("play", "--model", broken, "--output", "null", "--record", runs / "p.mid",
                              "--log", tmp_path / "play.log"), message)
    only(runs)


def test_a_missing_model_folder(tmp_path):
    one_line_error(moodstream("stream", "--model", tmp_path / "nowhere", "--output", "null"),
                   "model not found (expected a checkpoint directory)")


def test_a_model_file_names_itself_and_what_is_wrong_with_it(model, tmp_path):
    runs = tmp_path / "out"
    runs.mkdir()
    lone = tmp_path / "x.safetensors"  # corrupt, and with no checkpoint around it
    lone.write_bytes(b"\x00garbage")
    one_line_error(moodstream("render", "--model", lone, "--bars", "2", "-o", runs / "r.mid"),
                   f"{lone}: not part of a moodstream checkpoint ({tmp_path} has no model.safetensors or model.json "
                   f"or tokenizer.json)")
    stray = shutil.copy(lone, broken_checkpoint(model, tmp_path, "intact") / "x.safetensors")
    one_line_error(moodstream("render", "--model", stray, "--bars", "2", "-o", runs / "r.mid"),
                   f"{stray}: a checkpoint's weights are read from {Path(stray).parent / 'model.safetensors'}")
    truncated = broken_checkpoint(model, tmp_path, "truncated") / "model.safetensors"
    one_line_error(moodstream("render", "--model", truncated, "--bars", "2", "-o", runs / "r.mid"),
                   f"{truncated}: corrupt or truncated weights")
    only(runs)


# ---- sound and MIDI devices ---------------------------------------------------------------------------
def test_no_soundfont_names_the_package(model, tmp_path):
    empty = tmp_path / "no-soundfonts"
    empty.mkdir()
    runs = tmp_path / "out"
    runs.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, "-c", NO_SOUNDFONT, str(empty), *map(str, args)], capture_output=True,
                              text=True, timeout=300, cwd=REPO)

    hint = "install one with `sudo apt-get install fluid-soundfont-gm` (or timgm6mb-soundfont)"
    one_line_error(run("stream", "--model", model, "--output", "fluidsynth"), "no General MIDI soundfont",
                   hint)
    one_line_error(run("render", "--model", model, "--bars", "2", "-o", runs / "t.wav"), hint)
    only(runs)
    goes_on = run("stream", "--model", model, "--output", "fluidsynth,null", "--bars", "1", "--bpm", "300")
    assert goes_on.returncode == 0, goes_on.stderr
    assert "warning: no General MIDI soundfont" in goes_on.stderr and "going on with the other outputs" in goes_on.stderr
    one_line_error(moodstream("stream", "--model", model, "--output", "fluidsynth", "--soundfont",
                              tmp_path / "missing.sf2"), "missing.sf2 not found: pass an existing .sf2 file")


def test_no_audio_driver_names_every_driver_tried(model):
    out = moodstream("stream", "--model", model, "--output", "fluidsynth", "--bars", "1", "--bpm", "300",
                     env=NO_JACK)
    if out.returncode == 0:
        pytest.skip("this machine has a sound server: FluidSynth opened a device")
    one_line_error(out, "FluidSynth could not open an audio device (tried pipewire", "jack: no server running",
                   "or use --output port / null")
    goes_on = moodstream("stream", "--model", model, "--output", "fluidsynth,null", "--bars", "1",
                         "--bpm", "300", env=NO_JACK)
    assert goes_on.returncode == 0 and "going on with the other outputs" in goes_on.stderr, goes_on.stderr


def test_no_alsa_and_no_jack_server_lists_what_was_tried(model):
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer: the port opens")
    one_line_error(moodstream("stream", "--model", model, "--output", "port", env=NO_JACK),
                   "cannot open MIDI virtual port (tried ALSA: no ALSA sequencer (/dev/snd/seq); JACK: no JACK "
                   "server running)", "start a JACK server (`jackd -d dummy &`)")


@pytest.mark.jack
def test_a_port_name_that_does_not_exist(model, jack_server):
    line = one_line_error(moodstream("stream", "--model", model, "--output", "port", "--port", "nosuch"),
                          "cannot open MIDI port 'nosuch'", "JACK: no port named 'nosuch' (ports: ",
                          "check the name (`aconnect -l` or `jack_lsp` list ports)")
    assert "ALSA" in line


# ---- paths ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["proc", "no-folder", "a-folder"])
def test_an_unwritable_record_or_output_path_stops_before_anything_runs(model, tmp_path, where):
    """/proc refuses new files even to root (for whom os.access always says yes)."""
    def path(name: str) -> Path:
        if where == "a-folder":  # a folder that even has the right suffix
            (tmp_path / name).mkdir(exist_ok=True)
            return tmp_path / name
        return {"proc": Path("/proc") / name, "no-folder": tmp_path / "missing" / name}[where]

    fragment = {"proc": "is not writable", "no-folder": "does not exist; create it or choose another path",
                "a-folder": "is a directory: give a file name"}[where]
    one_line_error(moodstream("stream", "--model", model, "--output", "null", "--record", path("t.mid")),
                   "recording", fragment)
    one_line_error(moodstream("render", "--model", model, "--bars", "2", "-o", path("t.mid")), "output", fragment)
    one_line_error(moodstream("render", "--model", model, "--bars", "2", "-o", path("t.wav")), "output", fragment)
    one_line_error(moodstream("play", "--model", model, "--output", "null", "--record", path("t.mid")), fragment)
    one_line_error(moodstream("stream", "--soak-hours", "0.01", "--model", model, "--record", path("t.mid")),
                   fragment)
    assert not any(p.name.startswith(".t.") for p in tmp_path.rglob("*"))


def test_render_needs_a_mid_or_wav_name(model, tmp_path):
    one_line_error(moodstream("render", "--model", model, "--bars", "2", "-o", tmp_path / "t.mp3"),
                   "name a .mid or .wav file")
    only(tmp_path)


# ---- numbers out of range -----------------------------------------------------------------------------
RANGES = [
    ("--bpm", "10", "bpm = 10.0 is out of range: use a number from 20 to 300"),
    ("--bpm", "400", "bpm = 400.0 is out of range"),
    ("--bpm", "nan", "bpm = nan is out of range"),
    ("--temperature", "-0.1", "temperature = -0.1 is out of range: use a number from 0 to 2"),
    ("--temperature", "2.5", "temperature = 2.5 is out of range"),
    ("--top-p", "0", "top_p = 0.0 is out of range: use a number above 0 and at most 1"),
    ("--top-p", "1.5", "top_p = 1.5 is out of range"),
    ("--guidance", "-1", "guidance = -1.0 is out of range: use a number from 0 to 10"),
    ("--guidance", "11", "guidance = 11.0 is out of range"),
    ("--lookahead", "0", "lookahead = 0 bars is out of range: use 1 to 64"),
    ("--seed", "-1", "--seed -1 must be 0 or more"),
    ("--bars", "0", "--bars 0 must be at least 1"),
]


@pytest.mark.parametrize("flag,value,message", RANGES)
def test_stream_values_out_of_range(model, tmp_path, flag, value, message):
    one_line_error(moodstream("stream", "--model", model, "--output", "null", "--record",
                              tmp_path / "t.mid", flag, value), message)
    only(tmp_path)


@pytest.mark.parametrize("flag,value,message", [r for r in RANGES if r[0] in ("--bpm", "--temperature", "--top-p",
                                                                               "--guidance", "--seed")][::2])
def test_render_and_play_values_out_of_range(model, tmp_path, flag, value, message):
    one_line_error(moodstream("render", "--model", model, "--bars", "2", "-o", tmp_path / "t.mid", flag, value),
                   message)
    one_line_error(moodstream("play", "--model", model, "--output", "null", flag, value), message)
    one_line_error(moodstream("stream", "--soak-hours", "0.01", "--model", model, flag, value), message)
    only(tmp_path)


def test_soak_hours_out_of_range(model):
    one_line_error(moodstream("stream", "--soak-hours", "0", "--model", model), "soak hours = 0.0 is out of range")


# ---- datasets -----------------------------------------------------------------------------------------
HEADER = "path,source,style,mood,valence,arousal,kind,group,split\n"


def data_root(tmp_path: Path, shared_data: Path, files: dict[str, bytes | Path], header: str = HEADER,
              listed: tuple[str, ...] = ()) -> Path:
    """A data folder with a manifest over multitrack/<name>.mid files (bytes, or a real file to copy)."""
    root = tmp_path / "data"
    (root / "multitrack").mkdir(parents=True)
    for name, content in files.items():
        target = root / "multitrack" / f"{name}.mid"
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content)
    names = list(files) + list(listed)
    (root / "manifest.csv").write_text(header + "".join(f"multitrack/{n}.mid,MidiTok-tests,,,,,,,train\n"
                                                         for n in names))
    return root


def build(root: Path, out: Path):
    return moodstream("dataset", "build", "--sources", "multitrack", "--workers", "1", "--no-progress",
                      "--data-root", root, "--out", out)


def test_corrupt_empty_and_missing_files_are_skipped_and_counted(tmp_path, shared_data):
    root = data_root(tmp_path, shared_data, {"good": shared_data / "multitrack" / "Funkytown.mid", "empty": b"",
                                             "corrupt": shared_data / "corrupt" / "ValueError_Control168.mid"},
                     listed=("gone",))
    out = build(root, tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert "1 pieces" in out.stdout and "(3 files skipped)" in out.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    reasons = {Path(f["path"]).stem: f["reason"] for f in stats["skipped"]["files"]}
    assert reasons["empty"] == "empty file" and reasons["gone"] == "file missing"
    assert reasons["corrupt"].startswith("unreadable MIDI")
    assert "1 × file missing" in (tmp_path / "out" / "stats.md").read_text()


def test_a_dataset_where_nothing_can_be_read_is_an_error(tmp_path, shared_data):
    root = data_root(tmp_path, shared_data, {"empty": b"", "noise": b"MThd\x00\x00 not midi"}, listed=("gone",))
    one_line_error(build(root, tmp_path / "out"), "no piece could be read (3 files skipped: ",
                   "1 × empty file", "1 × file missing", "check --data-root and its manifest.csv")


def test_an_empty_data_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(build(empty, tmp_path / "out"), "no manifest.csv; pass --data-root")
    assert not (tmp_path / "out").exists()  # nothing written
    one_line_error(moodstream("train", "--data", empty, "--out", tmp_path / "run"),
                   "not a built dataset (no tokenizer.json)", "moodstream dataset build")
    one_line_error(moodstream("evaluate", "--data", empty, "--model", tmp_path / "run", "--out", tmp_path / "eval"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()


def test_a_manifest_with_missing_columns(tmp_path, shared_data, tiny_model_dir):
    root = data_root(tmp_path, shared_data, {"good": shared_data / "multitrack" / "Funkytown.mid"},
                     header="path,source,style,mood\n")
    (root / "manifest.csv").write_text("path,source,style,mood\nmultitrack/good.mid,MidiTok-tests,,\n")
    one_line_error(build(root, tmp_path / "out"), "manifest.csv: missing column(s) valence, arousal, kind, group, split")
    assert not (tmp_path / "out").exists()
    (root / "manifest.csv").write_text("path,source\nmultitrack/good.mid,MidiTok-tests\n")
    one_line_error(moodstream("evaluate", "--data", root / "manifest.csv", "--model", tiny_model_dir, "--out",
                              tmp_path / "eval"), "missing column(s) style, mood")
    assert not (tmp_path / "eval").exists()


def test_evaluate_names_missing_files_of_a_manifest(tmp_path, shared_data, tiny_model_dir):
    root = data_root(tmp_path, shared_data, {"good": shared_data / "multitrack" / "Funkytown.mid"}, listed=("gone",))
    one_line_error(moodstream("evaluate", "--data", root / "manifest.csv", "--model", tiny_model_dir, "--out",
                              tmp_path / "eval"), "1 file(s) not found: multitrack/gone.mid")
    assert not (tmp_path / "eval").exists()
