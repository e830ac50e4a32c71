# The workbook's commands. Everything runs inside .venv, created on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KERNEL := kstar
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED := outputs/executed
# all 10,000 test images through seven networks: run by the slow tier (nbval; its tables are not in the regression
# baseline, pipeline.baseline.UNCOMPARED)
SLOW_NOTEBOOK := notebooks/09_sample_size.ipynb
# unit tests run in parallel, one worker per core (pytest-xdist; a test file stays on one worker, so its module
# fixtures are built once); TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= auto
PYTEST_NB := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-kernel-name $(KERNEL)

.PHONY: venv demo test test-slow test-all lab notebooks sensitivity bench zoo study clean

venv: $(STAMP)

# pinned install (requirements.lock holds the exact versions the project was tested with), then the named kernel
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (kstar)" > /dev/null
	touch $(STAMP)

# notebooks 01-08 on their defaults, the real CIFAR study: executed notebooks, tables and figures under outputs/
demo: $(STAMP)
	mkdir -p $(EXECUTED)
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/kstar notebook $$nb $(EXECUTED)/$$(basename $$nb) -k $(KERNEL) || exit 1; \
	done
	@echo "done: executed notebooks in $(EXECUTED), tables in outputs/tables, figures in outputs/figures"

# the fast tier: the unit tests not marked slow, then the notebooks (nbval: they run top to bottom and show the same
# text and tables, numbers masked) and, in the same session, the tables they wrote against the reference tables
# within measured tolerances (tests/regression; tests/baseline/SENSITIVITY.md)
test: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/python -m pytest notebooks tests/regression/test_tables.py $(PYTEST_NB) -q --ignore=$(SLOW_NOTEBOOK)

# the slow tier alone: Dask studies, Ctrl-C, AutoAttack at full strength, real-weights sweeps, large N; the
# notebooks 02-08 again on the fast tier's features moved at float32-rounding level (the tolerances hold; run after
# make test); the sample-size notebook (all 10,000 test images through seven networks)
test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -q -m slow -n $(TEST_WORKERS) --dist loadfile --durations=15
	$(BIN)/python -m pytest tests/regression/test_tables_perturbed.py -q
	$(BIN)/python -m pytest $(SLOW_NOTEBOOK) $(PYTEST_NB) -q

# everything (CI): both tiers, each test once
test-all: test test-slow

# JupyterLab of .venv (with the kstar kernel) on working copies in lab/ (git-ignored): exploring never rewrites the
# tracked notebooks. JupyterLab's options go in LAB_ARGS, e.g. LAB_ARGS="--no-browser --port 8899"; without a token,
# on a trusted single-user machine only: LAB_ARGS="--no-browser --IdentityProvider.token=''"
lab: $(STAMP)
	$(BIN)/kstar lab $(LAB_ARGS)

# re-store the regression baseline from a fresh run of the defaults (on purpose, after a reviewed change): the lean
# notebooks and the reference tables in tests/baseline/tables, together; refused (nothing written) if any notebook
# failed. When results change in kind (new tables, columns or models), re-measure the tolerances as well (make
# sensitivity)
notebooks: demo
	$(BIN)/kstar store-notebooks --from $(EXECUTED) --to notebooks --tables outputs/tables --reference tests/baseline/tables

# the real CIFAR study as a batch on a local Dask cluster: summary, correlations, figures, index.html
study: $(STAMP)
	$(BIN)/kstar run studies/cifar.yaml

# re-measure how far every compared number moves when the features move at float32-rounding level (every notebook
# run nine times: other CPU instruction sets, convolution algorithms, float64, last-place noise) and write the
# regression tolerances: tests/baseline/tolerances.csv and tests/baseline/SENSITIVITY.md
sensitivity: $(STAMP)
	$(BIN)/python benchmarks/regression_sensitivity.py --earlier tests/baseline/ten-resnets/tolerances.csv --write

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_kstar.py

# rebuild the workbook's own models and re-measure their accuracies: the digits CNNs (data/zoo/, minutes) and the
# fine-tuned CIFAR ResNet-20s (data/cifar_resnets/, about 1 h 40 min on 2 CPU cores; models already built are kept,
# add ZOO_ARGS=--force to retrain them)
zoo: $(STAMP)
	$(BIN)/kstar zoo train $(ZOO_ARGS)

clean:
	rm -rf outputs/features outputs/features_parts outputs/kstar outputs/tables outputs/figures outputs/studies $(EXECUTED)
