# Fresh machine: `make demo` publishes a sample image into the embedded local stack
# (`make job` runs a whole image-build and customization job there);
# `make test` runs the test matrix with nox (noxfile.py): the client suite on Python 3.9 to 3.13
# and under the platform's pinned libraries, then linters and the whole suite. Each builds .venv first.
# `make lint` and `make pytest` run the linters / the whole suite once, in .venv only.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: venv demo job test test-ceph lint pytest bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt requirements-test.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -r requirements-dev.txt
	$(PIP) install --quiet -c constraints.txt -e '.[local,progress,template]'
	touch $@

demo: venv
	$(BIN)/python -m ims_python_helper local demo

# A whole image-build job and a customization job on a throw-away stack (needs squashfs-tools).
job: venv
	$(BIN)/python -m ims_python_helper local job

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest

# Every cell of the matrix, the whole suite (with lint) last; fails when any cell fails.
test: venv
	$(BIN)/nox

# The same suite with Ceph RGW required (installs nothing: see README).
test-ceph: venv
	IMS_TEST_S3=ceph IMS_REQUIRE_CEPH=1 $(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/publish_bench.py

clean:
	rm -rf $(VENV) .nox build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
