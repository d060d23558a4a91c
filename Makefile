# Two commands set everything up on a fresh Debian/Ubuntu machine: `make run` and `make test`.
# Both are idempotent; with nothing to do, set-up costs well under a second.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# The CPU build of torch lies on disk on these machines; pinning it keeps pip from pulling a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.moodstream-installed

.PHONY: setup system run test test-slow bench screenshot clean

setup: system $(STAMP)

system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || { echo "setup: installing $(TORCH_SPEC)"; $(PIP) install "$(TORCH_SPEC)"; }
	@echo "setup: installing moodstream (editable) and its dependencies"
	@$(PIP) install -e ".[dev]"
	@touch $(STAMP)

# The instrument plays with FluidR3_GM (fluid-soundfont-gm, ~140 MB); the tests need only the small TimGM6mb.
run: setup
	@bash scripts/setup-system.sh fluid-soundfont-gm
	$(VENV)/bin/moodstream play

test: setup
	$(VENV)/bin/python -m pytest -q

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

# make bench BENCH_ARGS="--levers --stream-seconds 600"   (see moodstream bench --help)
BENCH_ARGS ?=
bench: setup
	$(VENV)/bin/moodstream bench $(BENCH_ARGS)

# The README's picture of `moodstream play` (MODEL=DIR picks a checkpoint; default: the bundled model).
screenshot: setup
	$(PY) -m streamer.tui.screenshot docs/screenshot.svg $(if $(MODEL),--model $(MODEL))

clean:
	rm -rf $(VENV) build *.egg-info
