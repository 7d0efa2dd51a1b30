# The two commands a newcomer runs (see README): `make demo` and `make test`.
# Both create ./.venv on first use and install everything offline-capable into it.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the CPU wheel of torch that lies on disk on the course machines; override on a GPU box: make TORCH=torch==2.13.0+cu128
TORCH ?= torch==2.13.0
OPEN_CLIP := open_clip_torch==3.3.0

.PHONY: install demo test bench readme docs-check html clean

$(STAMP): setup.py settings.ini
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# CLIP's BPE vocabulary for the offline tokenizer ships inside open_clip_torch; --no-deps because it
	# declares torchvision, which would replace torch. vlsm_adapter reads the file and never imports open_clip.
	$(BIN)/pip install -q --no-deps "$(OPEN_CLIP)"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: the packaged stand-in base (tiny-pretrained, which follows prompts on natural
# scenes) on the synthetic ultrasound target domain: dense VL adapters trained (offline, minutes on 2 CPU cores), then
# the test split scored zero-shot (the frozen base) and adapted, side by side. Results land in runs/demo/ and the
# executed notebooks in runs/demo_train.ipynb, runs/demo_evaluate.ipynb.
demo: $(STAMP)
	mkdir -p runs
	$(BIN)/papermill nbs/05_train.ipynb runs/demo_train.ipynb -p dataset synthetic-us -p out_dir runs/demo -p overwrite True --log-output
	$(BIN)/papermill nbs/06_evaluate.ipynb runs/demo_evaluate.ipynb -p run_dir runs/demo --log-output

# Everything CI checks: notebooks and package in sync, every notebook runs, and the pytest suite.
test: $(STAMP)
	$(BIN)/nbdev_export
	@git diff --quiet --exit-code -- vlsm_adapter && test -z "$$(git status --porcelain -- vlsm_adapter)" || \
	  { echo "ERROR: nbdev_export changed vlsm_adapter/: the package differs from the notebooks (or is uncommitted)."; \
	    git status --porcelain -- vlsm_adapter; git --no-pager diff --stat -- vlsm_adapter; exit 1; }
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m vlsm_adapter.bench

# README.md is generated from nbs/index.ipynb (tests/test_docs.py fails when they disagree)
readme: $(STAMP)
	$(BIN)/python tools/docs.py readme

# what the Quarto renderer needs, checked offline (Quarto itself cannot be installed here)
docs-check: $(STAMP)
	$(BIN)/python tools/docs.py check

# a plain HTML copy of the executed notebooks, plots included, for readers without Quarto
html: $(STAMP)
	$(BIN)/python tools/docs.py html

clean:
	rm -rf runs _proc _docs html
