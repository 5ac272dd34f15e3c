# Two commands a user needs: `make run` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
CORES ?= all

.PHONY: help setup run quick test lint format bench figures clean lock

help:
	@echo "make run    - set up .venv, run the default workflow (snakemake --cores $(CORES)), write the report"
	@echo "make test   - set up .venv, run the whole test suite"
	@echo "make quick  - the tiny end-to-end workflow (config/quick.yaml) into results/quick/"
	@echo "make bench  - reference loop vs native engine (results/bench/bench.json), planning a 10,000-point grid (dag.json), window iterations torch vs native (window.json)"
	@echo "make lint   - ruff, snakefmt --check, snakemake --lint"

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "statetrain needs Python >= 3.11, but '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing): install Python 3.11+ (python.org, apt install python3.11-venv, brew install python@3.12 or uv python install 3.12) and run make PYTHON=python3.11 ..." >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

quick: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml --report results/quick/report.html

# Two pytest workers (pytest-xdist), one per core of a 2-core machine. Each test file stays on
# one worker (--dist loadfile), so its module fixtures (the SLURM cluster) run once; the longest
# files go first (tests/conftest.py).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --out results/bench/bench.json
	$(BIN)/python scripts/bench_dag.py --out results/bench/dag.json
	$(BIN)/python scripts/bench_window.py --out results/bench/window.json

lint: $(STAMP)
	$(BIN)/ruff check src scripts tests
	$(BIN)/ruff format --check src scripts tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format src scripts tests
	$(BIN)/ruff check --fix src scripts tests
	$(BIN)/snakefmt Snakefile workflow/rules

lock: $(STAMP)
	( echo '# Full transitive lock (pip freeze) applied as constraints by `make`; regenerate with `make lock`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' ) > constraints.txt

clean:
	rm -rf results .snakemake

# Copy the figures the README shows from the last `make run` into docs/figures/.
figures:
	mkdir -p docs/figures
	cp results/sweep/summary.csv docs/figures/summary.csv
	cp results/sweep/headline.csv docs/figures/headline.csv
	cp results/plots/assembled/graph1.png docs/figures/graph1_assembled.png
	cp results/plots/assembled/graph2.png docs/figures/graph2_assembled.png
	cp results/plots/spec/graph2.png docs/figures/graph2_spec.png
	cp "results/runs/spec/seed~42/loss_curves.png" docs/figures/loss_curves_spec.png
	cp "results/runs/f1/seed~1/loss_curves.png" docs/figures/loss_curves_f1.png