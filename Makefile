# dmha: `make demo` runs the main job, `make test` the tests; both build on `make install`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned in the same pip command as everything else, so pip takes the local CPU wheel
# instead of resolving a multi-GB CUDA build.
PIP_INSTALL := $(BIN)/pip install --quiet --progress-bar off --disable-pip-version-check

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "torch==2.13.0" -e ".[bench,serve,export,test]" > $(VENV)/pip.log 2>&1 \
	  || { grep -v "is ignored: it is neither" $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import dmha, torch, faster_whisper, opensmile; assert torch.__version__.startswith('2.13.0')"
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/dmha demo --out demo_out

# The whole suite, integration tests on the embedded models and ../shared/data/ravdess included.
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Only the fast unit tests (tiny random-init encoders).
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ravdess_peers.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/asr.py
	# speaker cross-validation (resumes; model.dim=128: the width measured in the README, 6x cheaper than 512)
	# and the peers on exactly its folds
	$(BIN)/dmha prepare ravdess ../shared/data/ravdess --out benchmarks/results/ravdess_cv.csv
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/ravdess_cv.csv --out benchmarks/results/ravdess_cv --folds 6 --seeds 0,1,2 --jobs 2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cv_peers.py benchmarks/results/ravdess_cv
	$(BIN)/dmha prepare crema-d ../shared/data/crema-d --out benchmarks/results/crema_cv.csv
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_cv --folds 5 --seeds 0 --jobs 2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cv_peers.py benchmarks/results/crema_cv
	# CREMA-D's own split (one fold) and its peers; then what partial fine-tuning costs per epoch
	HF_HUB_OFFLINE=1 $(BIN)/dmha train --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_split
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cv_peers.py benchmarks/results/crema_split --out benchmarks/results/crema_split_peers.json
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/finetune_cost.py --manifest benchmarks/results/ravdess_cv.csv
	# the crowd's votes on CREMA-D (same folds as crema_cv): hard labels (3 seeds), soft targets, the raters'
	# mean intensity as an attribute alone and with the categories; scored against label and crowd majority
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_cv --folds 5 --seeds 0,1,2 --jobs 2
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_cv_soft --folds 5 --seeds 0,1,2 --jobs 2 --set train.soft_targets=votes_
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_cv_intensity --folds 5 --seeds 0 --jobs 2 --set 'model.targets=["vote_intensity"]' 'model.attribute_ranges.vote_intensity=[0,100]'
	HF_HUB_OFFLINE=1 $(BIN)/dmha cv --manifest benchmarks/results/crema_cv.csv --out benchmarks/results/crema_cv_multitask --folds 5 --seeds 0 --jobs 2 --set 'model.targets=["category","vote_intensity"]' 'model.attribute_ranges.vote_intensity=[0,100]' train.dev_criterion=sum
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/crema_targets.py --manifest benchmarks/results/crema_cv.csv benchmarks/results/crema_cv benchmarks/results/crema_cv_soft benchmarks/results/crema_cv_intensity benchmarks/results/crema_cv_multitask --seeds 0 --out benchmarks/results/crema_targets_seed0.json
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/crema_targets.py --manifest benchmarks/results/crema_cv.csv benchmarks/results/crema_cv benchmarks/results/crema_cv_soft --out benchmarks/results/crema_targets.json

clean:
	rm -rf $(VENV) demo_out .pytest_cache
