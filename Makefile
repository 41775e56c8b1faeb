# The two commands of the README:
#   make demo   install everything, then run the main job on the embedded demo cohort
#   make test   install everything, then run the whole test suite
# (make demo installs no SLURM plugin: extras slurm and unigradicon come with make test)
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.install-stamp
CORES ?= 2

.PHONY: install demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/snakemake --profile profiles/default --cores $(CORES)

$(VENV)/.extras-stamp: $(STAMP)
	$(VENV)/bin/pip install -e '.[test,slurm,unigradicon]'
	touch $(VENV)/.extras-stamp

test: install $(VENV)/.extras-stamp
	bash tests/system_deps.sh
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/snakemake --lint
