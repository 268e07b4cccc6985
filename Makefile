# sentinel-playbooks: the two set-up commands are `make demo` and `make test`.
# Everything is installed from the project's own files into .venv/, .venv-checkov/ and node_modules/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
STAMPS := .make

.PHONY: install lint test unit audit demo bench bench-quick checkov chromium clean

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

$(STAMPS)/checkov: tools/checkov.txt
	@mkdir -p $(STAMPS)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/checkov.txt
	@touch $@

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

checkov: $(STAMPS)/checkov
	@if [ -d infra ]; then $(CHECKOV_VENV)/bin/checkov -d infra --quiet --compact --framework bicep arm json --skip-download; \
	else echo "checkov: no infra/ yet"; fi

test: install lint audit unit checkov bench-quick

demo: install
	$(PY) -m localdev.demo

bench: install
	$(PY) -m bench.run

bench-quick: install
	$(PY) -m bench.run --quick

clean:
	rm -rf $(STAMPS) .pytest_cache .ruff_cache
