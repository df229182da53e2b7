#!/usr/bin/env python
"""Temperature or per-class calibration? The evidence, from the speaker cv's own predictions.

dmha calibrates every model with one temperature fitted on its dev speakers (`dmha.calibration`). Issue 28
asks for a per-class calibration if the evidence favours it. This compares, on every run of a cv (fold ×
seed), three maps fitted on the run's dev clips (each clip alone) and applied to z = log p of the run's
shipped probabilities (already temperature-scaled, so z is the logits / T up to a constant per clip):

- `temperature`: softmax(s · z), one scale (what dmha ships, refitted);
- `bias`: softmax(z + b), one offset per class (changes decisions);
- `vector`: softmax(w ⊙ z + b), a scale and an offset per class (Guo et al. 2017's vector scaling).

The maps are listed simplest first. A richer map is chosen over a simpler one only if, on dev, it lowers
the mean ECE by more than TIE *and* does not raise the mean Brier score (a proper score, which ECE's bins
are not): a per-class map costs parameters fitted on a few hundred dev clips and changes decisions.

The **choice is read on dev**: each map is fitted on half of the run's dev speakers and scored on the other
half, and the other way round (a 2-fold cross-fit over speakers, since a map scored on the clips it was
fitted on always looks best). The test columns (fitted on all dev speakers, scored on the test speakers)
are reported beside it, as the cv reports its test figures once the choice is fixed. ECE has 15 bins
(`dmha.metrics`); each figure is the mean over runs with a Student-t 95% interval over folds (seeds averaged
within a fold first).

    python benchmarks/calibration_methods.py benchmarks/results/ravdess_cv benchmarks/results/crema_cv \\
        [--out benchmarks/results/calibration/calibration_methods.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import optimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv_peers  # noqa: E402  (the interval over folds every cv benchmark reports)
from dmha.calibration import softmax  # noqa: E402
from dmha.metrics import brier_score, expected_calibration_error, macro_f1_score  # noqa: E402

METHODS = ("temperature", "bias", "vector")
TIE = 0.005  # a richer map must lower the dev ECE by more than this to be chosen (see the docstring)
RIDGE = 1e-3  # a small pull toward the identity map, so a class absent from half the dev split stays finite


def apply_map(method: str, params: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The calibrated probabilities of log-probabilities z (N, K) under a fitted map."""
    k = z.shape[1]
    if method == "temperature":
        return softmax(params[0] * z)
    if method == "bias":
        return softmax(z + params)
    if method == "vector":
        return softmax(params[:k] * z + params[k:])
    raise ValueError(f"unknown calibration map {method!r}")


def identity(method: str, k: int) -> np.ndarray:
    return {"temperature": np.ones(1), "bias": np.zeros(k), "vector": np.r_[np.ones(k), np.zeros(k)]}[method]


def fit_map(method: str, z: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The map's parameters minimising the mean negative log-likelihood of the targets (plus RIDGE·|θ − id|²)."""
    start = identity(method, z.shape[1])

    def loss(theta: np.ndarray) -> float:
        p = apply_map(method, theta, z)
        return float(-np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None)).mean()
                     + RIDGE * ((theta - start) ** 2).sum())

    return optimize.minimize(loss, start, method="L-BFGS-B").x


def read_predictions(path: Path, labels: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(labels, log-probabilities (N, K), target indices, file names) of an eval folder's predictions.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no predictions")
    names = labels or [c[2:] for c in rows[0] if c.startswith("p_")]
    probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    targets = np.array([names.index(r["label"]) for r in rows])
    return names, np.log(np.clip(probs, 1e-12, None)), targets, [Path(r["path"]).name for r in rows]


def speakers_of(manifest: Path) -> dict[str, str]:
    """File name → speaker, from a fold's manifest (predictions.csv names the audio, not the speaker)."""
    with open(manifest, newline="", encoding="utf-8") as f:
        return {Path(r["path"]).name: r["speaker"] for r in csv.DictReader(f)}


def scores(probs: np.ndarray, targets: np.ndarray) -> dict:
    return {"ece": expected_calibration_error(probs, targets), "brier": brier_score(probs, targets),
            "macro_f1": macro_f1_score(targets, probs.argmax(axis=1), probs.shape[1])}


def cross_fit(method: str, z: np.ndarray, targets: np.ndarray, speakers: list[str]) -> dict:
    """Dev scores of a map fitted on half the dev speakers and applied to the other half (both ways)."""
    order = sorted(set(speakers))
    half = np.array([order.index(s) % 2 for s in speakers])
    out = np.zeros_like(z)
    for h in (0, 1):
        fit, held = half != h, half == h
        out[held] = apply_map(method, fit_map(method, z[fit], targets[fit]), z[held])
    return scores(out, targets)


def run_figures(run_dir: Path, manifest: Path) -> dict:
    """Every map's dev (cross-fitted) and test scores for one cv run."""
    labels, z_dev, y_dev, dev_files = read_predictions(run_dir / "eval_dev" / "predictions.csv")
    _, z_test, y_test, _ = read_predictions(run_dir / "eval_test" / "predictions.csv", labels)
    who = speakers_of(manifest)
    dev_speakers = [who[f] for f in dev_files]
    figures = {"shipped": {"test": scores(np.exp(z_test), y_test)}}
    for method in METHODS:
        params = fit_map(method, z_dev, y_dev)
        figures[method] = {"dev": cross_fit(method, z_dev, y_dev, dev_speakers),
                           "test": scores(apply_map(method, params, z_test), y_test)}
    return figures


def choose(dev_ece: list[float], dev_brier: list[float]) -> str:
    """The map (METHODS order, simplest first) kept on dev: each richer map replaces the current choice
    only if its ECE is lower by more than TIE and its Brier score is not higher."""
    chosen = 0
    for i in range(1, len(METHODS)):
        if dev_ece[i] < dev_ece[chosen] - TIE and dev_brier[i] <= dev_brier[chosen]:
            chosen = i
    return METHODS[chosen]


def summarise(cv_dir: Path) -> dict:
    """Fold means (seeds averaged within a fold) of every map's scores, over the cv's runs."""
    cv = json.loads((cv_dir / "cv.json").read_text(encoding="utf-8"))
    per_fold: dict[tuple, list[float]] = defaultdict(list)
    for run in cv["runs"]:
        fold_dir = cv_dir / f"fold{run['fold']}"
        figures = run_figures(fold_dir / f"seed{run['seed']}", fold_dir / "manifest.csv")
        for method, parts in figures.items():
            for part, values in parts.items():
                for metric, value in values.items():
                    per_fold[(method, part, metric, run["fold"])].append(value)
    out: dict = {}
    for (method, part, metric, fold), values in per_fold.items():
        out.setdefault(method, {}).setdefault(part, {}).setdefault(metric, {})[str(fold)] = float(np.mean(values))
    for method in out:
        for part in out[method]:
            for metric, folds in out[method][part].items():
                out[method][part][metric] = {**cv_peers.interval(list(folds.values())), "n_folds": len(folds),
                                             "per_fold": folds}
    chosen = choose([out[m]["dev"]["ece"]["mean"] for m in METHODS], [out[m]["dev"]["brier"]["mean"] for m in METHODS])
    return {"cv": str(cv_dir.relative_to(ROOT)) if cv_dir.is_relative_to(ROOT) else cv_dir.name,
            "runs": len(cv["runs"]), "seeds": cv["seeds"], "chosen_on_dev": chosen, "methods": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/calibration/calibration_methods.json")
    args = parser.parse_args(argv)
    result = {"protocol": "maps fitted on z = log p of each run's shipped (temperature-scaled) probabilities; "
                          "dev: 2-fold cross-fit over the run's dev speakers; test: fitted on all dev speakers",
              "ece_bins": 15, "corpora": {}}
    for cv_dir in args.cv_dirs:
        summary = summarise(cv_dir.resolve())
        result["corpora"][cv_dir.name] = summary
        print(f"{cv_dir.name} ({summary['runs']} runs; chosen on dev: {summary['chosen_on_dev']})")
        for method, parts in summary["methods"].items():
            dev = parts.get("dev", {})
            test = parts["test"]
            dev_text = f"dev ECE {dev['ece']['mean']:.3f}  " if dev else " " * 15
            print(f"  {method:12} {dev_text}test ECE {test['ece']['mean']:.3f}  Brier {test['brier']['mean']:.3f}  "
                  f"macro-F1 {test['macro_f1']['mean']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
