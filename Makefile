# MicroPython FOTA over MQTT — every entry point starts with `make setup`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench lint typecheck deploy hil clean device docs-check console

setup: $(STAMP) device console

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

# The web console's page (platform/console/web: Chart.js bundled by esbuild, versions from its
# committed package-lock.json) into platform/console/static/dist/, rebuilt when a source changes.
CONSOLE := host_tools/fota_host/platform/console
CONSOLE_JS := $(CONSOLE)/static/dist/app.js
console: $(CONSOLE_JS)
$(CONSOLE_JS): $(CONSOLE)/web/package.json $(CONSOLE)/web/package-lock.json $(wildcard $(CONSOLE)/web/src/*.js $(CONSOLE)/web/src/*/*.js)
	@command -v npm >/dev/null 2>&1 || { echo "make console: the web console is built with npm (node 20 or later): install nodejs and npm" >&2; exit 2; }
	cd $(CONSOLE)/web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The device's fast unit tests: pure functions on the real unix port, one micropython
# process, no broker (seconds). The first thing to run.
test-fast: setup
	$(BIN)/python -m pytest tests/firmware/unit -q $(PYTEST_ARGS)

# make demo [KEEP=1|KEEP=DIR] [SLOW=1] [DEVICES=6]: KEEP keeps the work folder (its commands
# can then be run again by hand there), SLOW paces the tour for a person to follow.
demo: setup
	$(BIN)/python -m fota_host.sim.demo $(if $(filter 1 yes true,$(KEEP)),--keep,$(if $(filter-out 0 no false,$(KEEP)),--keep $(KEEP))) $(if $(filter 1 yes true,$(SLOW)),--slow) $(if $(DEVICES),--devices $(DEVICES))

bench: setup
	$(BIN)/python bench/run.py

# Host code with the top-level pyproject.toml; device code (firmware/ and the MicroPython
# scripts in bench/, which the host config leaves out) with firmware/ruff.toml.
MICROPYTHON_SCRIPTS := bench/engine_run.py bench/engine_min.py bench/raw_loop.py bench/floor_get.py
lint: setup
	$(BIN)/ruff check host_tools tests bench
	$(BIN)/ruff check --config firmware/ruff.toml firmware $(MICROPYTHON_SCRIPTS)

# The README's and docs' shell blocks, run as written in a fresh folder laid out like a
# checkout (each marked to run, run in the background, or skip with the reason: an unmarked
# one fails; tests/docs_check.py); every relative link checked. Also part of `make test`.
docs-check: setup
	$(BIN)/python tests/docs_check.py
	$(BIN)/python -m pytest -q tests/host/cli/test_cli_docs.py

clean:
	rm -rf build

# == Real boards (docs/boards.md) =========================================================
# Device code against the official MicroPython port stubs (pyright); 0 errors or it fails.
typecheck: setup
	$(BIN)/fota typecheck

# make deploy BOARD=esp32|pico_w PORT=/dev/ttyUSB0 CONFIG=device.json [DRY_RUN=1]
deploy: setup
	@test -n "$(BOARD)" || { echo "usage: make deploy BOARD=esp32|pico_w PORT=/dev/ttyUSB0 CONFIG=device.json [DRY_RUN=1]" >&2; exit 2; }
	@test -n "$(CONFIG)" || { echo "make deploy: CONFIG=device.json is missing (fota device provision writes one)" >&2; exit 2; }
	@case "$(DRY_RUN)" in ""|0|1|no|yes|false|true) ;; *) echo "make deploy: DRY_RUN=$(DRY_RUN): use DRY_RUN=1 (print only) or DRY_RUN=0" >&2; exit 2;; esac
	$(BIN)/fota deploy --board $(BOARD) --port "$(PORT)" --config $(CONFIG) $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

# make hil BOARD=esp32|esp32s3|esp32c3|esp32c6|pico_w|pico2_w PORT=/dev/ttyUSB0 CONFIG=device.json DATA=platform-data IMAGE=new.bin VERSION=V
#          [TABLE=firmware.bin|table.bin|board] [FLASH_SIZE=4M|8M|16M]   (ESP32: the OTA slots the image must fit)
hil: setup
	@test -n "$(PORT)" && test -e "$(PORT)" || { echo "make hil: no board at PORT='$(PORT)': connect an ESP32 or Pico W over USB and pass PORT=/dev/ttyUSB0 (see docs/boards.md, 'Hardware in the loop')" >&2; exit 2; }
	$(BIN)/fota hil --board $(BOARD) --port $(PORT) --config $(CONFIG) --data $(DATA) --image $(IMAGE) --version $(VERSION) $(if $(TABLE),--table $(TABLE)) $(if $(FLASH_SIZE),--flash-size $(FLASH_SIZE))
