#!/usr/bin/env python
"""Figures the docs derive from other committed results (differences, wins, fold-level tests), computed
here so each one the docs cite has a JSON path (tests/test_results.py checks them), not a hand sum.

- the seed vote of each cv's three seeds against probe (b), per fold: mean difference, wins and an exact
  sign-flip test over folds (null: each fold's difference is as likely positive as negative; with the
  runs' predictions gone from the machine, the speaker-level permutation of cv_peers.py cannot be rerun);
- each screening candidate against the kept recipe on the same dev folds (dev alone and grouped), and
  the kept recipe against the previous default;
- the default's grouped figure against the previous default's.

    python benchmarks/derived.py     # writes benchmarks/results/derived/derived.json (seconds, no torch)
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "derived" / "derived.json"


def load(relative: str) -> dict:
    return json.loads((RESULTS / relative).read_text(encoding="utf-8"))


def sign_flip_p(differences: list[float]) -> float:
    """Two-sided exact sign-flip p of the mean difference over folds (all 2^K sign patterns)."""
    d = np.asarray(differences, dtype=float)
    observed = abs(d.mean())
    means = [abs((d * np.array(signs)).mean()) for signs in itertools.product((1, -1), repeat=d.size)]
    return float(np.mean([m >= observed - 1e-12 for m in means]))


def paired(a: list[float], b: list[float]) -> dict:
    d = [x - y for x, y in zip(a, b)]
    return {"per_fold": d, "mean": float(np.mean(d)), "wins": int(sum(x > 0 for x in d)), "folds": len(d),
            "sign_flip_p": sign_flip_p(d)}


def seed_vote_vs_probe(cv: str) -> dict:
    peers = load(f"{cv}/peers.json")
    vote = peers["dmha_seed_vote"]["alone"]["per_fold"]  # a list over folds
    probe = [fold["macro_f1"] for fold in peers["peers"]["b"]["per_fold"]]
    return paired(vote, probe)


def dev_per_fold(record: dict, figure: str) -> list[float]:
    per_fold = record["summary"]["per_fold"]
    return [per_fold[k][figure] for k in sorted(per_fold, key=int)]


def screening(corpus_folder: str, base: str) -> dict:
    """Every candidate of a screening folder against `base`, on the dev folds (alone and grouped)."""
    folder = RESULTS / corpus_folder
    reference = json.loads((folder / f"{base}.json").read_text(encoding="utf-8"))
    out = {}
    for path in sorted(folder.glob("*.json")):
        if path.stem == base:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        out[f"{path.stem}_minus_{base}"] = {
            variant: paired(dev_per_fold(record, f"dev_macro_f1_{variant}"), dev_per_fold(reference, f"dev_macro_f1_{variant}"))
            for variant in ("alone", "grouped")}
    return out


def kept_vs_previous_on_crema() -> dict:
    """The CREMA-D confirmation of `subsets`: seed 0 of crema_cv against seed 0 of crema_cv_previous, dev
    figures of the same 5 folds (read, at the time, from full cvs: see docs/benchmarks/results.md)."""
    def seed0(cv: str, figure: str) -> list[float]:
        runs = sorted((r for r in load(f"{cv}/cv.json")["runs"] if r["seed"] == 0), key=lambda r: r["fold"])
        return [r[figure] for r in runs]

    return {variant: {**paired(seed0("crema_cv", f"dev_macro_f1_{variant}"), seed0("crema_cv_previous", f"dev_macro_f1_{variant}")),
                      "previous_mean": float(np.mean(seed0("crema_cv_previous", f"dev_macro_f1_{variant}"))),
                      "kept_mean": float(np.mean(seed0("crema_cv", f"dev_macro_f1_{variant}")))}
            for variant in ("alone", "grouped")}


def grouped_vs_previous(cv: str) -> float:
    return load(f"{cv}/cv.json")["summary"]["macro_f1_grouped"]["mean"] - \
        load(f"{cv}_previous/cv.json")["summary"]["macro_f1_grouped"]["mean"]


def main() -> int:
    result = {
        "about": __doc__.split("\n\n")[0],
        "seed_vote_minus_probe_b": {"ravdess": seed_vote_vs_probe("ravdess_cv"), "crema-d": seed_vote_vs_probe("crema_cv")},
        "screening": {"ravdess": screening("ravdess_screening", "subsets"),
                      "crema-d": screening("crema_screening", "subsets")},
        "kept_minus_previous_default": {
            "ravdess": {v: paired(dev_per_fold(load("ravdess_screening/subsets.json"), f"dev_macro_f1_{v}"),
                                  dev_per_fold(load("ravdess_screening/previous_default.json"), f"dev_macro_f1_{v}"))
                        for v in ("alone", "grouped")},
            "crema-d": kept_vs_previous_on_crema()},
        "grouped_minus_previous_default": {"ravdess": grouped_vs_previous("ravdess_cv"),
                                           "crema-d": grouped_vs_previous("crema_cv")},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
