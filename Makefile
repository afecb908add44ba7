# Quickstart: `make demo` then `make test` (both create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The web page's tests run in Debian's Chromium (Playwright drives it; its
# own browser download needs a network the tests must not use).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test benchmark serve clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,video,web]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nst_jax.main --config=configs/demo.py
	@echo "demo image: out/demo.png (manifest: out/demo.json)"

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	NST_JAX_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -n 2 --dist loadgroup tests

serve: $(STAMP)
	$(PY) -m nst_jax.main serve --config=cpu

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) out .pytest_cache
