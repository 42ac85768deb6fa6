# Two commands for a newcomer:  `make app` (install + start the app)  and  `make test` (install + run tests).
# Both install this project into .venv with `pip install -e .` (pyproject.toml), so `sound-vae`,
# `python -m vae` and the packages work from anywhere; benchmarks run from here as `python -m benchmarks.x`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: app test lint examples benchmarks mutation mutation-sample clean

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
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

examples: $(VENV)/.installed-dev  ## re-make examples/: digits with espeak-ng, music with fluidsynth (see examples/README.md)
	$(PY) scripts/make_examples.py
	$(PY) scripts/make_music_examples.py

benchmarks: $(VENV)/.installed-dev  ## everything in benchmarks/, results in benchmarks/results/
	$(PY) -m benchmarks.run_all

mutation: $(VENV)/.installed-dev  ## mutation testing of every mutant of the core (hours on 2 cores); see TESTING.md
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $$(nproc 2>/dev/null || echo 2) || true
	$(PY) scripts/mutation_report.py

mutation-sample: $(VENV)/.installed-dev  ## mutation testing of a seeded random sample of 600 mutants (~30 min on 2 cores)
	rm -rf mutants
	$(PY) scripts/mutation_sample.py --n 600 --seed 0 --max-children $$(nproc 2>/dev/null || echo 2)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output mutants build dist *.egg-info
