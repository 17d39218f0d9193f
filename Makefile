# passk_jax: `make demo` runs the main job on its embedded default; `make test` runs lint + the CI suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,parity,tasks]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m passk_jax.demo

lint: $(STAMP)
	$(BIN)/ruff check passk_jax tests benchmarks experiments notebooks
	$(BIN)/ruff format --check passk_jax tests benchmarks experiments notebooks

format: $(STAMP)
	$(BIN)/ruff check --fix passk_jax tests benchmarks experiments notebooks
	$(BIN)/ruff format passk_jax tests benchmarks experiments notebooks

test: lint
	$(BIN)/python -m pytest -n 2 -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/estimators.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
