# Two commands do all the set-up on a fresh clone (only Python 3.11+ needed):
#   make demo   create .venv, install, run the main job on the real data
#   make test   create .venv, install (with the test and benchmark extras), run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# The folder holding Images-processed/ (the real COVID-CT data); CI and developers have ../shared.
CTCURATE_DATA ?= $(abspath ../shared/covid-ct)
export CTCURATE_DATA
OUT    ?= out

.PHONY: demo test lint bench install install-test clean chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test.txt
	$(PIP) install -q -r requirements/test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	@mkdir -p $(OUT)
	$(VENV)/bin/ctcurate validate --images "$(CTCURATE_DATA)" --format html --output $(OUT)/validate.html || true
	$(VENV)/bin/ctcurate validate --images "$(CTCURATE_DATA)"; test $$? -le 1
	@# check-leakage: exit 1 means leaks were found (and shown), which is what the demo is for
	$(VENV)/bin/ctcurate check-leakage --data "$(CTCURATE_DATA)" --cache $(OUT)/cache.sqlite --format html --output $(OUT)/leakage.html; test $$? -le 1
	$(VENV)/bin/ctcurate check-leakage --data "$(CTCURATE_DATA)" --cache $(OUT)/cache.sqlite --fix-splits $(OUT)/fixed-splits; test $$? -le 1

# The check-leakage HTML report is tested in headless Chromium (Debian's package; CI runs as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: install-test chromium lint
	$(PY) -m pytest -n 2 -q

# ruff (ruff.toml) on everything, mypy --strict on the library (setup.cfg [mypy]); `make test` runs both first.
lint: install-test
	$(VENV)/bin/ruff check ctcurate tests bench
	$(VENV)/bin/mypy

bench: install-test
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
