# sentinel-playbooks: the two set-up commands are `make demo` and `make test`.
# Everything is installed from the project's own files into .venv/, .venv-checkov/ and node_modules/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
STAMPS := .make

.PHONY: install lint test unit audit demo bench bench-quick checkov typecheck requirements up up-emulators chromium clean

install: $(STAMPS)/venv $(STAMPS)/node

$(STAMPS)/venv: requirements.txt requirements-dev.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMPS)/node: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMPS)/checkov: tools/checkov.txt tools/checkov-parser.txt
	@mkdir -p $(STAMPS)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/checkov.txt
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r tools/checkov-parser.txt
	@touch $@

# requirements.txt from requirements.in, every distribution pinned (pip-tools in .venv-tools). Keeps the
# current pins; `make requirements UPGRADE=1` moves every pin to the newest compatible release.
requirements:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && \
		.venv-tools/bin/python -m pip install --quiet --disable-pip-version-check -r tools/pip-tools.txt)
	.venv-tools/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --no-header \
		--annotation-style=line $(if $(UPGRADE),--upgrade,) -o requirements.txt requirements.in

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .

unit: install chromium
	$(PY) -m pytest -q

# Headless Chromium and its driver for the real-browser page tests (Debian packages), installed when missing;
# the tests fail in CI without them rather than skip.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium and chromium-driver are needed by tests/orchestration/test_pages_browser.py"; exit 1; fi

# Known vulnerabilities in the runtime pins and what they pull in (tools/audit.py says what it can decide).
audit: $(STAMPS)/venv
	$(PY) tools/audit.py

# checkov, then its JSON report must show 0 parsing errors (tools/checkov_parsing.py).
checkov: $(STAMPS)/checkov
	$(CHECKOV_VENV)/bin/checkov -d infra --quiet --compact --framework bicep arm json --skip-download \
		-o cli -o json --output-file-path console,$(STAMPS)/checkov.json
	$(PY) tools/checkov_parsing.py $(STAMPS)/checkov.json

# infra/ against the official Bicep types (../shared/contracts/bicep-types; fails in CI when missing) and the
# playbook definitions' structure, offline.
typecheck: $(STAMPS)/venv
	$(PY) -m tools.bicep_check
	$(PY) -m tools.playbook_check

# `make test` runs every stage, even after one fails, and reports all failures at the end (non-zero exit if
# any failed): on a loaded machine one flaky stage must not hide the others. Add a stage by appending its
# target to TEST_STAGES.
TEST_STAGES := lint audit typecheck unit checkov bench-quick

test: install
	@failed=""; \
	for stage in $(TEST_STAGES); do \
		echo "== make $$stage (load: $$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"; \
		$(MAKE) --no-print-directory $$stage || failed="$$failed $$stage"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED stage(s):$$failed"; exit 1; fi; \
	echo "make test: every stage passed ($(TEST_STAGES))"

demo: install
	$(PY) -m localdev.demo

# The local stack for poking by hand (until Ctrl-C): with the local host, or only Azurite and the emulators
# for the real Functions host (func start reads the local.settings.json that up-emulators writes).
up: install
	$(PY) -m localdev.up

up-emulators: install
	$(PY) -m localdev.up --emulators-only

# The full bench (under the `real` latency profile; minutes). Misses are listed; BENCH_ARGS=--strict fails on them.
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: install
	$(PY) -m bench.run --quick

clean:
	rm -rf $(STAMPS) .pytest_cache .ruff_cache
