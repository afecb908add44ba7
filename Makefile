# Quickstart: `make demo` then `make test` (both create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test benchmark clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,video]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nst_jax.main --config=configs/demo.py
	@echo "demo image: out/demo.png (manifest: out/demo.json)"

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) out .pytest_cache
