# storeroom's developer commands. Python packages install into .venv in this checkout.
# `make demo` installs only the demo's packages (stamp .venv/.installed-demo); `make test`,
# `make lint`, `make docs` and `make bench` install every extra, the test tools, Azurite (npm)
# and, as root on Debian, the chromium package (stamp .venv/.installed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: venv test test-only lint format bench demo docs clean

$(STAMP): pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
ifneq ($(NPM),)
	npm ci --no-audit --no-fund --loglevel=error
else
	@echo "npm not found: Azure tests need node + npm (the Azurite emulator); they will skip"
endif
	@# The browser test drives Debian's Chromium (Playwright cannot download browsers here).
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      || echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium not found (apt-get install chromium): the browser test will skip"; fi; \
	fi
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[demo]'
	touch $(DEMO_STAMP)

venv: $(STAMP)

## Run the whole test suite, then lint and type-check.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks docs/gen_api.py
	$(BIN)/mypy

test-only: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks docs/gen_api.py
	$(BIN)/mypy

## Apply ruff's formatting (CI checks it).
format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks docs/gen_api.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/orm.py
	$(BIN)/python benchmarks/orm_instructions.py
	$(BIN)/python benchmarks/web_memory.py
	$(BIN)/python benchmarks/small_paths.py
	$(BIN)/python benchmarks/s3_get_content.py
	$(BIN)/python benchmarks/media.py
	$(BIN)/python benchmarks/uploads.py
	$(BIN)/python benchmarks/maintenance.py
	$(BIN)/python benchmarks/s3_migrate.py

## Start the demo on http://127.0.0.1:8000 (SQLite and local disk under ./data).
## Installs only storeroom[demo] (litestar, uvicorn, aiosqlite): no test tools, npm or apt.
demo: $(DEMO_STAMP)
	$(BIN)/python -m storeroom.demo

## Regenerate docs/api.md from the docstrings.
docs: $(STAMP)
	$(BIN)/python docs/gen_api.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
