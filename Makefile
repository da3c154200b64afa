# The two commands a newcomer runs: `make demo` and `make test`. Each does all set-up itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data test demo lint prior oracle clean

setup: $(STAMP) data

# The virtual environment; reinstalled when the dependencies change. On this kind of machine pip's
# torch cap resolves `torch>=2.4` to the 2.14.1 wheel on local disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package (the project's real image data; no download needed at run time).
data: $(FASHION_MNIST)
$(FASHION_MNIST):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Embedded default, end to end on CPU: learn the Fashion-MNIST 5-shot concepts on the committed tiny
# prior (about 8 minutes, once), then expand with Diff-II.
CONCEPTS := outputs/concepts/fashion_mnist-5shot-seed0/concepts.json
$(CONCEPTS): | $(STAMP) data
	$(PY) train.py fit --config configs/concept.yaml

demo: setup $(CONCEPTS)
	$(PY) expand.py predict --output_dir outputs/demo

# Re-train the committed artifacts (about an hour on 2 CPU cores).
prior: setup
	$(PY) train.py fit --config configs/prior.yaml

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
