# dmha: `make demo` runs the main job, `make test` the tests; both build on `make install`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned in the same pip command as everything else, so pip takes the local CPU wheel
# instead of resolving a multi-GB CUDA build.
PIP_INSTALL := $(BIN)/pip install --quiet --progress-bar off --disable-pip-version-check

.PHONY: install demo demo-train ready-model test test-fast bench docs docs-serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "torch==2.13.0" -e ".[dev]" > $(VENV)/pip.log 2>&1 \
	  || { grep -v "is ignored: it is neither" $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import dmha, torch, faster_whisper, opensmile; assert torch.__version__.startswith('2.13.0')"
	touch $@

# The bundled model on the shipped CREMA-D example clips: each alone, then joined into one recording
# (timeline); prints a table and writes demo_out/report.html.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/dmha examples --out demo_out

# The synthetic corpus (eSpeak NG) through transcribe → train → evaluate → predict, offline.
demo-train: install
	HF_HUB_OFFLINE=1 $(BIN)/dmha demo --out demo_out/synthetic

# Train the bundled models from ../shared/data (configs/ready/) into src/dmha/pretrained/, with their cards.
ready-model: install
	HF_HUB_OFFLINE=1 $(BIN)/python tools/ready_model.py

# The whole suite, integration tests on the embedded models and ../shared/data/ravdess included.
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Only the fast unit tests (tiny random-init encoders).
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# Every benchmark writes into its own folder under benchmarks/results/ and resumes or recomputes what it
# finds there, so `make bench` can run again; the small JSON at each folder's top is committed (README).
R := benchmarks/results
DMHA := HF_HUB_OFFLINE=1 $(BIN)/dmha
PY := HF_HUB_OFFLINE=1 $(BIN)/python
bench: install
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/ravdess_peers.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/asr.py
	$(BIN)/dmha prepare ravdess ../shared/data/ravdess --out $(R)/manifests/ravdess.csv
	$(BIN)/dmha prepare crema-d ../shared/data/crema-d --out $(R)/manifests/crema-d.csv
	# recipe candidates on RAVDESS's dev folds (`dmha cv --dev-only`, one seed: no test figure is computed)
	$(PY) benchmarks/screening.py
	# a change kept on RAVDESS dev must not lose on CREMA-D's dev folds (baseline: the subsets candidate, dev-only)
	$(PY) benchmarks/screening.py --corpus crema-d --only subsets
	$(PY) benchmarks/screening.py --corpus crema-d --only subsets_prior3000
	# speaker cross-validation (resumes) and the peers on exactly its folds
	$(DMHA) cv --manifest $(R)/manifests/ravdess.csv --out $(R)/ravdess_cv --folds 6 --seeds 0,1,2 --jobs 2
	$(PY) benchmarks/cv_peers.py $(R)/ravdess_cv
	$(DMHA) cv --manifest $(R)/manifests/crema-d.csv --out $(R)/crema_cv --folds 5 --seeds 0,1,2 --jobs 2
	$(PY) benchmarks/cv_peers.py $(R)/crema_cv
	# temperature or a per-class calibration map, read off both cvs' dev and test predictions
	$(PY) benchmarks/calibration_methods.py $(R)/ravdess_cv $(R)/crema_cv
	# both corpora in one training (6 folds within each corpus, masked losses), what the union of labels
	# costs each corpus, and a model trained on one corpus scored on the other, beside each corpus's own cv
	$(DMHA) cv --manifest $(R)/manifests/ravdess.csv --manifest $(R)/manifests/crema-d.csv --out $(R)/joint_cv --folds 6 --seeds 0 --jobs 2
	$(PY) benchmarks/cv_peers.py $(R)/joint_cv --only b
	$(PY) benchmarks/label_set.py $(R)/joint_cv
	$(PY) benchmarks/cross_corpus.py --ravdess $(R)/manifests/ravdess.csv --crema $(R)/manifests/crema-d.csv --seeds 0 --joint $(R)/joint_cv --single ravdess=$(R)/ravdess_cv --single crema-d=$(R)/crema_cv
	# how fast the bundled models answer (run alone)
	$(PY) benchmarks/ready_speed.py
	# each bundled model's own recipe in speaker cv (3 seeds, the probe on the same folds) and the bundled weights
	# on their own test speakers; then the cards are written from those JSONs
	$(PY) benchmarks/bundled_cv.py
	$(PY) tools/ready_model.py --card-only
	# the differences, wins and fold-level tests the docs derive from the results above
	$(PY) benchmarks/derived.py
	# CREMA-D's own split (one fold) and its peers; then what partial fine-tuning costs per epoch
	$(DMHA) train --manifest $(R)/manifests/crema-d.csv --out $(R)/crema_split
	$(PY) benchmarks/cv_peers.py $(R)/crema_split --out $(R)/crema_split/peers.json
	$(PY) benchmarks/finetune_cost.py --manifest $(R)/manifests/ravdess.csv
	# the crowd's votes on CREMA-D (the folds of crema_cv): soft targets (3 seeds), the raters' mean intensity
	# as an attribute alone and with the categories (seed 0); scored against the label and the crowd majority
	$(DMHA) cv --manifest $(R)/manifests/crema-d.csv --out $(R)/crema_cv_soft --folds 5 --seeds 0,1,2 --jobs 2 --set train.soft_targets=votes_
	$(DMHA) cv --manifest $(R)/manifests/crema-d.csv --out $(R)/crema_cv_intensity --folds 5 --seeds 0 --jobs 2 --set 'model.targets=["vote_intensity"]' 'model.attribute_ranges.vote_intensity=[0,100]'
	$(DMHA) cv --manifest $(R)/manifests/crema-d.csv --out $(R)/crema_cv_multitask --folds 5 --seeds 0 --jobs 2 --set 'model.targets=["category","vote_intensity"]' 'model.attribute_ranges.vote_intensity=[0,100]' train.dev_criterion=sum
	$(PY) benchmarks/crema_targets.py --manifest $(R)/manifests/crema-d.csv $(R)/crema_cv $(R)/crema_cv_soft $(R)/crema_cv_intensity $(R)/crema_cv_multitask --seeds 0 --out $(R)/crema_targets/seed0.json
	$(PY) benchmarks/crema_targets.py --manifest $(R)/manifests/crema-d.csv $(R)/crema_cv $(R)/crema_cv_soft --out $(R)/crema_targets/three_seeds.json

# The documentation site: the generated reference pages (from config.py and the CLI parsers), then the
# site into site/, strict (a broken link or reference fails the build).
docs: install
	$(BIN)/python tools/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) demo_out .pytest_cache site
