"""What the crowd's votes do on CREMA-D: several `dmha cv` folders on the same folds, scored against the
portrayed emotion and against the raters' majority, with the raters' mean intensity as an attribute.

For each cv folder (e.g. hard labels, `train.soft_targets=votes_`, `model.targets` with
`vote_intensity`): macro-F1 against the portrayed label (the manifest's `label`), macro-F1 against
the audio-only crowd majority (`vote_majority`; clips whose majority is a tie are left out), and the
CCC of `vote_intensity` where the model predicts it; each clip alone (the headline) and, for models
with speaker statistics, grouped by speaker (the same names ending in `_grouped`). Each fold's figure is its mean over the seeds the
folders share; the first folder is the baseline the others are compared with, fold by fold (mean
difference, Student-t 95% interval, folds won).

    python benchmarks/crema_targets.py --manifest runs/crema.csv runs/crema_cv_spk runs/crema_cv_soft \
        runs/crema_cv_intensity runs/crema_cv_multitask --out runs/crema_targets.json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from dmha.cv_report import interval95
from dmha.data.manifest import labels_of, read_manifest
from dmha.figures import predictions_file
from dmha.metrics import attribute_report, classification_report


def run_scores(run: Path, labels: list[str], majority: dict[str, str], intensity: dict[str, float]) -> dict:
    """One fold/seed run's test figures, recomputed from its predictions: each clip alone (the headline)
    and, for a model with speaker statistics, grouped by speaker (figures ending in `_grouped`)."""
    scores = {}
    variants = ("alone", "grouped") if predictions_file(run, "grouped") != predictions_file(run, "alone") else ("alone",)
    for variant in variants:
        suffix = "" if variant == "alone" else "_grouped"
        rows = list(csv.DictReader(open(predictions_file(run, variant), newline="", encoding="utf-8")))
        if "prediction" in rows[0]:
            index = {label: k for k, label in enumerate(labels)}
            scores[f"macro_f1_label{suffix}"] = classification_report(
                [index[r["label"]] for r in rows], [index[r["prediction"]] for r in rows], labels)["macro_f1"]
            voted = [r for r in rows if majority.get(r["path"]) in index]  # a single winner among the labels
            scores[f"macro_f1_majority{suffix}"] = classification_report(
                [index[majority[r["path"]]] for r in voted], [index[r["prediction"]] for r in voted], labels)["macro_f1"]
            scores["n_majority"] = len(voted)
        if "vote_intensity" in rows[0]:
            pred = [float(r["vote_intensity"]) for r in rows]
            scores[f"ccc_intensity{suffix}"] = attribute_report(pred, [intensity[r["path"]] for r in rows])["ccc"]
    return scores


def folder_scores(folder: Path, labels, majority, intensity, seeds: list[int] | None) -> dict[int, dict]:
    """{fold: {figure: mean over the seeds}} of one cv folder."""
    cv = json.loads((folder / "cv.json").read_text(encoding="utf-8"))
    use = seeds or cv["seeds"]
    out = {}
    for fold in cv["folds"]:
        runs = [run_scores(folder / f"fold{fold['fold']}" / f"seed{s}", labels, majority, intensity) for s in use
                if (folder / f"fold{fold['fold']}" / f"seed{s}" / "metrics.json").is_file()]
        if len(runs) == len(use):
            out[fold["fold"]] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="cv folders on the same folds; the first is the baseline")
    parser.add_argument("--manifest", required=True, type=Path, help="the CREMA-D manifest the cvs ran on")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds to use (default: each folder's own)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    items = read_manifest(args.manifest, check_files=False)
    majority = {str(i.path): i.extra.get("vote_majority", "") for i in items}
    intensity = {str(i.path): float(i.extra["vote_intensity"]) for i in items if i.extra.get("vote_intensity")}
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    labels = labels_of(items)
    scored = {str(f): folder_scores(f, labels, majority, intensity, seeds) for f in args.folders}
    base_name = str(args.folders[0])
    base = scored[base_name]
    summary = {}
    print(f"{'cv folder':40} {'figure':18} {'mean':>7} {'95% interval':>17}   vs {Path(base_name).name}: diff [95%], folds won")
    for name, folds in scored.items():
        summary[name] = {}
        figures = sorted({k for f in folds.values() for k in f if k != "n_majority"})
        for figure in figures:
            values = [folds[k][figure] for k in sorted(folds)]
            lo, hi = interval95(values)
            entry = {"mean": float(np.mean(values)), "ci95": [lo, hi], "folds": len(values)}
            line = f"{Path(name).name:40} {figure:18} {entry['mean']:7.4f} [{lo:7.4f}, {hi:7.4f}]"
            shared = [k for k in sorted(folds) if k in base and figure in base[k]]
            if name != base_name and shared:
                diff = [folds[k][figure] - base[k][figure] for k in shared]
                dlo, dhi = interval95(diff)
                entry["vs_baseline"] = {"diff": float(np.mean(diff)), "ci95": [dlo, dhi],
                                        "won": int(sum(d > 0 for d in diff)), "folds": len(diff)}
                line += f"   {np.mean(diff):+.4f} [{dlo:+.4f}, {dhi:+.4f}], {entry['vs_baseline']['won']}/{len(diff)}"
            summary[name][figure] = entry
            print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seeds": seeds, "folds": scored, "summary": summary}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
