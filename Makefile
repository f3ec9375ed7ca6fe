# partbench: one command installs, one runs the smoke suite, one runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow test-paper lint format smoke report reproduce bench clean

install: $(STAMP)  ## create .venv and install partbench with its pinned dependencies

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

test: install  ## the default test tier (minutes on 2 CPU cores)
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

test-paper: install  ## reproduced numbers vs the paper's tables (skips cells without real results)
	$(BIN)/python -m pytest -m paper

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

smoke: install  ## the smoke suite end to end (synthetic data, tiny encoders; minutes on a CPU)
	$(BIN)/partbench run --suite smoke

report: install  ## reports/*.md from every result under results/
	$(BIN)/partbench report --results-dir results --out reports

reproduce: install  ## the paper suite through DVC (downloads, GPUs, days): reruns only what changed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro paper_report

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
