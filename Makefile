# storeroom's developer commands. Everything installs into .venv in this checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: venv test test-only lint bench demo docs clean

$(STAMP): pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
ifneq ($(NPM),)
	npm ci --no-audit --no-fund --loglevel=error
else
	@echo "npm not found: Azure tests need node + npm (the Azurite emulator); they will skip"
endif
	touch $(STAMP)

venv: $(STAMP)

## Run the whole test suite, then lint and type-check.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test-only: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/orm.py
	$(BIN)/python benchmarks/web_memory.py

demo: $(STAMP)
	$(BIN)/python -m storeroom.demo

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
