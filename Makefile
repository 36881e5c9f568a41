# Every target creates .venv and installs the project on first use.
PY := .venv/bin/python
STAMP := .venv/.installed
export FGM_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.run vae_std mnist

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.bench_vae_step
	$(PY) -m benchmarks.bench_adam

clean:
	rm -rf .venv runs
