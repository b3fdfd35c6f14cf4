# The two commands of README.md: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint data clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

data:
	scripts/get_fashion_mnist.sh

# Trains the CPU demo into runs/demo; rerunning resumes from the last checkpoint.
demo: $(STAMP) data
	$(BIN)/jaxgen-train --config=configs/ddpm_fashion_mnist.py:demo --workdir=runs/demo

# The whole suite on CPU JAX with 8 simulated devices.
test: $(STAMP)
	scripts/get_fashion_mnist.sh --optional
	$(BIN)/ruff check jaxgen tests configs benchmarks
	$(BIN)/shellcheck launch/*.sh launch/slurm.sbatch scripts/*.sh .ci/run
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf runs/demo
