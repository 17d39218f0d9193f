# passk_jax: `make demo` runs the main job on its embedded default; `make test` runs lint + the CI suite.
# Each target installs what it needs into .venv. The stamp records a hash of pyproject.toml and the
# extras installed, so editing the dependencies (or pulling a change to them) reinstalls on the next
# target, whatever the file times say.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := rl,test,parity,tasks
DEPS_ID := $(EXTRAS)-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
SRC := passk_jax tests benchmarks experiments notebooks

.PHONY: install demo test test-slow lint format bench install-size clean

install:
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$(DEPS_ID)" ]; then \
	  set -e; \
	  test -x $(BIN)/python || $(PY) -m venv $(VENV); \
	  $(BIN)/pip install -q --upgrade pip; \
	  $(BIN)/pip install -q -e '.[$(EXTRAS)]'; \
	  echo '$(DEPS_ID)' > $(STAMP); \
	fi

demo: install
	$(BIN)/python -m passk_jax.demo

lint: install
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

format: install
	$(BIN)/ruff check --fix $(SRC)
	$(BIN)/ruff format $(SRC)

test: lint
	$(BIN)/python -m pytest -n 2 -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/estimators.py

# Builds the wheel, installs it with no extras in a fresh venv and prints its size and package count.
install-size: install
	$(BIN)/python benchmarks/install_size.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
