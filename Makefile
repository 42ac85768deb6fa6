# Two commands for a newcomer:  `make app` (install + start the app)  and  `make test` (install + run tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: app test lint examples benchmarks clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

app: $(VENV)/.installed  ## install, then serve the app on http://127.0.0.1:7860 with the shipped model
	$(PY) app.py --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev  ## install, then lint and run the whole test suite
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .

examples: $(VENV)/.installed  ## re-synthesise examples/ with espeak-ng
	$(PY) scripts/make_examples.py

benchmarks: $(VENV)/.installed-dev  ## everything in benchmarks/, results in benchmarks/results/
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
