# collabfeat: `make install` then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test lint bench bench-quality bench-full clean

install:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel "cython>=3" "numpy>=1.24"
	# torch/torchvision pinned to the releases known to work together on this platform.
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	# libmf ships only sources: build it against the numpy/cython installed above.
	$(PIP) install --no-build-isolation -e '.[vision,dev]'
	# lightfm 1.17's setup.py no longer builds under PEP 517; this installs a patched sdist.
	$(PY) bench/install_lightfm.py

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check cfcore cfvision bench tests examples
	$(PY) -m ruff format --check cfcore cfvision bench tests examples

bench:
	$(PY) -m bench run quick

bench-full:
	$(PY) -m bench run full

bench-quality:
	$(PY) -m bench run quality

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
