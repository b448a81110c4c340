# `make run` and `make test` each set up .venv on their own (torch pinned to the CPU wheel).
PY := .venv/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT := true
# test workers: each gets its share of the cores (tests/conftest.py)
JOBS ?= auto

.PHONY: run test test-loaded test-all lint report bench clean

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,hf]'
	touch $@

run: .venv/.installed
	$(PY) run.py $(ARGS)

test: .venv/.installed
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -m 'not heavy' --cov=lineage --cov-report=term --cov-fail-under=85 --durations=25 $(ARGS)

# the same suite with two busy loops beside it (tests/conftest.py): no test may depend on a
# quiet machine
test-loaded: .venv/.installed
	LINEAGE_TEST_BURN=2 $(MAKE) test

# every test, the heavy ones too (about 10 min on 2 cores)
test-all: .venv/.installed
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile $(ARGS)

lint: .venv/.installed
	$(PY) -m ruff check lineage hydra_plugins tests scripts benchmarks experiments run.py
	$(PY) -m ruff format --check lineage hydra_plugins tests scripts benchmarks experiments run.py
	$(PY) -m mypy lineage hydra_plugins

report: .venv/.installed
	$(PY) scripts/report.py $$(ls -dt outputs/sweeps/*/ | head -1) $(ARGS)

clean:
	rm -rf .venv outputs/runs outputs/sweeps
