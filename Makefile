# Fresh machine: `make demo` publishes a sample image into the embedded local stack
# (`make job` runs a whole image-build and customization job there);
# `make test` runs the test matrix with nox (noxfile.py): the client suite on Python 3.9 to 3.13
# and under the platform's pinned libraries, then linters and the whole suite. Each builds .venv first.
# `make lint` and `make pytest` run the linters / the whole suite once, in .venv only.
# PYTHON=python3.9 (any 3.9-3.13) makes .venv with that interpreter and its constraints file.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The pins follow the interpreter: constraints/py3X.txt where there is one (3.9, 3.10), else
# constraints.txt (3.11 to 3.13); noxfile.py's `full` cell takes the same rule.
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PY_TAG := py$(subst .,,$(PY_VERSION))
CONSTRAINTS ?= $(if $(wildcard constraints/$(PY_TAG).txt),constraints/$(PY_TAG).txt,constraints.txt)
HOW_TO_GET_PYTHON := install Python 3.9 to 3.13 with venv (e.g. apt-get install python3 python3-venv, or pyenv install 3.12) and pass it: make PYTHON=python3.12 ...

.PHONY: venv python-ok demo job test test-ceph lint pytest bench clean

venv: python-ok $(VENV)/.installed-$(PY_TAG)

python-ok:
	@test -n "$(PY_VERSION)" || { echo "make: cannot run PYTHON=$(PYTHON); $(HOW_TO_GET_PYTHON)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 13) else 1)' || \
	    { echo "make: PYTHON=$(PYTHON) is Python $(PY_VERSION); this project supports 3.9 to 3.13: $(HOW_TO_GET_PYTHON)" >&2; exit 1; }

# One stamp per interpreter: `make PYTHON=python3.9 ...` after a 3.11 .venv remakes it (--clear).
$(VENV)/.installed-$(PY_TAG): setup.py requirements.txt requirements-test.txt requirements-dev.txt $(CONSTRAINTS)
	$(PYTHON) -m venv --clear $(VENV)
	{ $(PIP) install --quiet -c $(CONSTRAINTS) --upgrade pip && \
	  $(PIP) install --quiet -c $(CONSTRAINTS) -r requirements-dev.txt -e '.[local,progress,template]'; } || \
	    { echo "make: pip could not install the pins of $(CONSTRAINTS) on Python $(PY_VERSION) ($(PYTHON)); each Python has its own (constraints/py39.txt, constraints/py310.txt, constraints.txt for 3.11-3.13; CONSTRAINTS=... to choose); else $(HOW_TO_GET_PYTHON)" >&2; exit 1; }
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
