# sentinel-playbooks: the two set-up commands are `make demo` and `make test`.
# Everything is installed from the project's own files into .venv/, .venv-checkov/ and node_modules/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
STAMPS := .make

.PHONY: install lint test unit audit demo bench bench-quick checkov clean

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

unit: install
	$(PY) -m pytest -q

# Known vulnerabilities in the runtime pins and what they pull in (tools/audit.py says what it can decide).
audit: $(STAMPS)/venv
	$(PY) tools/audit.py

checkov: $(STAMPS)/checkov
	@if [ -d infra ]; then $(CHECKOV_VENV)/bin/checkov -d infra --quiet --compact --framework bicep arm json --skip-download; \
	else echo "checkov: no infra/ yet"; fi

# `make test` runs every stage, even after one fails, and reports all failures at the end (non-zero exit if
# any failed): on a loaded machine one flaky stage must not hide the others. Add a stage by appending its
# target to TEST_STAGES.
TEST_STAGES := lint audit unit checkov bench-quick

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

# The full bench (under the `real` latency profile; minutes). Misses are listed; BENCH_ARGS=--strict fails on them.
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: install
	$(PY) -m bench.run --quick

clean:
	rm -rf $(STAMPS) .pytest_cache .ruff_cache
