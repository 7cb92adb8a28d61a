# The two set-up commands: `make demo` and `make test` (see README.md).
# Works on a fresh Debian/Ubuntu with python3.11 (+ python3.11-venv); on Windows use the
# commands in README.md ("Windows") instead of make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pip options, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=

.PHONY: demo test venv clean bench ci windows-wheels

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 not found as '$(PYTHON)'; install python3.11 and python3.11-venv, or set PYTHON=/path/to/python3.11"; exit 2; }
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "'$(PYTHON) -m venv' is unavailable: install the python3.11-venv package"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e ".[test,train]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sarcoscope demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_analyze.py

windows-wheels: $(STAMP)
	.ci/windows-wheels

ci:
	.ci/run

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
