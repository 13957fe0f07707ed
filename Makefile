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
SHELL := /bin/bash

# pip's output goes to a log (shown only when it fails), so that the demo fits one screen.
INSTALL_LOG = $(VENV)/install.log
QUIET_PIP   = >>$(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }

$(VENV)/bin/python:
	@echo "creating $(VENV) and installing ctcurate (log: $(INSTALL_LOG))"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip $(QUIET_PIP)

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	@$(PIP) install -q -e . $(QUIET_PIP)
	@$(PY) -m compileall -q ctcurate $(QUIET_PIP)  # an editable install has no bytecode (a wheel's does)
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test.txt
	@echo "installing the test and benchmark extras into $(VENV) (log: $(INSTALL_LOG))"
	@$(PIP) install -q -r requirements/test.txt $(QUIET_PIP)
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The demo: validate and check-leakage on the real data, both HTML reports, corrected split lists,
# then a summary. Exit status 1 from a command means "problems found", which is what it is shown for.
CT = $(VENV)/bin/ctcurate
demo: install
	@mkdir -p $(OUT)
	@echo "== 1/2 ctcurate validate: the metadata sheets, split lists and images in $(CTCURATE_DATA)"
	@$(CT) validate --images "$(CTCURATE_DATA)" --format html --output $(OUT)/validate.html 2>/dev/null; test $$? -le 1
	@$(CT) validate --images "$(CTCURATE_DATA)" --quiet | tee $(OUT)/validate-summary.txt; test $${PIPESTATUS[0]} -le 1
	@echo
	@echo "== 2/2 ctcurate check-leakage: duplicate pictures, and leaks across splits, labels, patients, figures"
	@$(CT) check-leakage --data "$(CTCURATE_DATA)" --cache $(OUT)/cache.sqlite --format html --output $(OUT)/leakage.html \
		--fix-splits $(OUT)/fixed-splits --force | tee $(OUT)/leakage-summary.txt; test $${PIPESTATUS[0]} -le 1
	@echo
	@echo "== summary"
	@echo "validate:       $$(head -1 $(OUT)/validate-summary.txt)"
	@echo "check-leakage:  $$(sed -n 's/^wrote [^:]*: //p' $(OUT)/leakage-summary.txt)"
	@echo "reports:        $(OUT)/validate.html and $(OUT)/leakage.html (open them in a browser)"
	@echo "new splits:     $(OUT)/fixed-splits/ ($(OUT)/fixed-splits/README.md says what moved and what it cannot fix)"
	@echo "next:           source $(VENV)/bin/activate   (or call $(CT) directly), then for example"
	@echo "                ctcurate validate --fix $(OUT)/fixed-metadata   # a corrected copy of the sheets"
	@echo "                ctcurate check-leakage --help                 # every option; docs/ has each command's page"

# The HTML reports are tested in headless Chromium (Debian's package). As root (CI) `make test`
# installs it; anyone else is told the command, and outside CI the browser tests then skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends chromium; \
	else echo "note: chromium is missing and installing it needs root: sudo apt-get install chromium (the browser tests skip without it, and fail in CI)"; fi

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
