#!/usr/bin/env python
"""The paper's decision rules on RAVDESS's own split: per-class thresholds, prior correction, hard voting.

Trains `configs/ravdess.toml` (the paper's head and recipe on the embedded encoders) three ways
(standard MHA + WCE, sub-vector MHA + WCE, standard MHA + focal loss) and with two more seeds, tunes
each model's thresholds on train (the paper) and the first also on dev, and scores on test: each
model by argmax, with thresholds, with prior correction to uniform and with both; the hard-voting
ensemble of the three configurations and of the three seeds. Resumable: finished runs are reused.

    python benchmarks/decisions.py [--manifest M.csv] [--out benchmarks/results/decisions]

Writes OUT/decisions.json (runs, models and ensembles are under OUT/runs/, not committed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ravdess.toml"
MODELS = {"std_wce": [], "sub_wce": ["model.attention=subvector"], "std_focal": ["loss=focal"],
          "std_wce_seed1": ["seed=1"], "std_wce_seed2": ["seed=2"]}


def train_all(manifest: Path, runs: Path) -> dict[str, dict]:
    """Each model trained once (a finished run folder is read back), with its training metrics."""
    from dmha.config import load
    from dmha.experiment import train

    return {name: train(manifest, runs / name, load(CONFIG, overrides), progress=True) for name, overrides in MODELS.items()}


def decisions(model_dir: Path, manifest: Path, out: Path) -> dict[str, float]:
    """Test macro-F1 of every decision variant of one model or ensemble (argmax, thresholds, prior, both)."""
    from dmha.evaluation import evaluate

    return evaluate(model_dir, manifest, "test", out, progress=False, report=False)["decisions_macro_f1"]


def main(argv: Sequence[str] | None = None) -> int:
    from dmha.data.ravdess import prepare_ravdess
    from dmha.ensemble import make_ensemble
    from dmha.evaluation import evaluate, tune_model_thresholds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decisions")
    args = parser.parse_args(argv)
    runs = args.out / "runs"
    manifest = runs / "manifest.csv"
    if not manifest.is_file():
        prepare_ravdess(args.data, manifest)
    trained = train_all(manifest, runs)
    result: dict = {"config": str(CONFIG.relative_to(ROOT)), "split": "RAVDESS actors 1-16 train, 17-20 dev, 21-24 test",
                    "models": {}, "ensembles": {}}
    for name in MODELS:
        model = runs / name / "model"
        (model / "thresholds.json").unlink(missing_ok=True)
        tuned_dev = None
        if name == "std_wce":  # thresholds tuned on dev instead of train (b')
            tune_model_thresholds(model, manifest, "dev", progress=False)
            tuned_dev = evaluate(model, manifest, "test", runs / f"eval_{name}_dev_thresholds", progress=False,
                                 report=False)["macro_f1"]
        tune_model_thresholds(model, manifest, "train", progress=False)  # the paper: thresholds from train
        result["models"][name] = {"dev_macro_f1": trained[name]["dev_macro_f1"],
                                  "test": decisions(model, manifest, runs / f"eval_{name}"),
                                  **({"test_thresholds_tuned_on_dev": tuned_dev} if tuned_dev is not None else {})}
        print(f"{name}: {result['models'][name]}", flush=True)
    for name, members in (("configurations", ["std_wce", "sub_wce", "std_focal"]),
                          ("seeds", ["std_wce", "std_wce_seed1", "std_wce_seed2"])):
        folder = runs / f"ensemble_{name}"
        shutil.rmtree(folder, ignore_errors=True)  # members' thresholds may have been retuned
        make_ensemble([runs / m / "model" for m in members], folder)
        result["ensembles"][name] = {"members": members, "test": decisions(folder, manifest, runs / f"eval_ensemble_{name}")}
        print(f"ensemble of the {name}: {result['ensembles'][name]['test']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decisions.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'decisions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
