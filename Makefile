# Two entry points (README): `make quickstart` runs the main job, `make test` runs the test suite.
# Both create the virtual environment in .venv on first use (and refresh it when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
# Dev packages installed without their requirements (pyproject.toml's dev extra lists the rest of them):
# vot-toolkit requires opencv-python, whose cv2 would overwrite the pinned opencv-python-headless. 0.7.4, not
# 0.8 / 0.9: their supervised and multistart experiments cannot run a single-object TraX tracker
# (docs/reference/formats.md §3.2).
NODEPS_DEV := vot-toolkit==0.7.4

.PHONY: quickstart test install lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	$(VENV)/bin/python -m pip install --quiet --no-deps $(NODEPS_DEV)
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/ocean quickstart $(ARGS)

# Two pytest-xdist workers, each taking whole test files (module fixtures start once); the long files first
# (tests/conftest.py orders them; --no-loadscope-reorder keeps that order, where xdist would otherwise hand
# out the files with the most tests first and leave the one-test learning file for last, alone on one
# worker). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check ocean data_prep pipelines jobs tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
