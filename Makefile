# MicroPython FOTA over MQTT — every entry point starts with `make setup`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test demo bench lint typecheck deploy hil clean device

setup: $(STAMP) device

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency pins or the package metadata change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# Device libraries (pinned, sha256-checked) and .mpy compilation into build/.
device: $(STAMP)
	$(BIN)/fota build > /dev/null

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m fota_host.demo

bench: setup
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check host_tools tests bench

clean:
	rm -rf build
