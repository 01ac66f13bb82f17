# Fresh machine: `make demo` publishes a sample image into the embedded local stack
# (`make job` runs a whole image-build and customization job there);
# `make test` runs the linters and the whole test suite. Each builds .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: venv demo job test test-ceph lint pytest bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -r requirements-test.txt
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

test: lint pytest

# The same suite with Ceph RGW required (installs nothing: see README).
test-ceph: venv
	IMS_TEST_S3=ceph IMS_REQUIRE_CEPH=1 $(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/publish_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
