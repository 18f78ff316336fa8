# The single entry point: install, run, test, lint, bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CKPT ?= ckpt

.PHONY: install run test test-fast lint format bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test,plot]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with icnn (editable), pinned deps and test tools

run: install  ## init configs/default.yaml to $(CKPT)/ and inspect it
	$(BIN)/icnn init --seed 0 --config configs/default.yaml --out $(CKPT) --force
	$(BIN)/icnn inspect $(CKPT)

test: install  ## the whole suite, slow cases included (what CI runs), on every core
	$(BIN)/pytest -n auto

test-fast: install  ## the loop after each edit: everything but the cases marked slow (pytest --cpu-durations=0 audits them)
	$(BIN)/pytest -n auto -m "not slow"

lint: install  ## ruff, import-linter's layers, basedpyright on icnn_cli/, deptry (imports declared)
	$(BIN)/ruff check icnn_cli tests bench configs
	$(BIN)/ruff format --check icnn_cli tests bench configs
	$(BIN)/lint-imports
	$(BIN)/basedpyright
	$(BIN)/deptry .

format: install
	$(BIN)/ruff check --fix icnn_cli tests bench configs
	$(BIN)/ruff format icnn_cli tests bench configs

bench: install  ## benchmarks against the plain hand-written alternative -> BENCHMARKS.md
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(CKPT) .pytest_cache
