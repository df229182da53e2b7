#!/usr/bin/env python
"""What offering every corpus's labels costs the clips of a corpus that never had some of them.

A model trained on several corpora with masked losses (each clip's loss over its own corpus's labels)
predicts over the union at prediction time. For a joint cv, this reads each run's test predictions
(`eval_test/predictions.csv`, each clip alone) and, per corpus, counts how often the most probable label
over *all* the model's labels is one the corpus never offered (RAVDESS's calm and surprised, for a
CREMA-D clip): those clips would be answered with a class their speakers were never asked to act. It
also gives the per-class F1 of every label, scored over all labels.

    python benchmarks/label_set.py benchmarks/results/joint_cv [--out FILE]

Writes CV_DIR/label_set.json (default) and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dmha.corpora import canonical  # noqa: E402
from dmha.metrics import classification_report  # noqa: E402


def corpus_labels(rows_by_corpus: dict[str, list[dict]]) -> dict[str, set[str]]:
    return {corpus: {canonical(r["label"]) for r in rows} for corpus, rows in rows_by_corpus.items()}


def read_runs(cv_dir: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """Every test prediction of the cv (each clip alone), grouped by the corpus the cv's manifests give."""
    cv = json.loads((cv_dir / "cv.json").read_text(encoding="utf-8"))
    by_corpus: dict[str, list[dict]] = defaultdict(list)
    labels: list[str] = []
    for run in cv["runs"]:
        folder = cv_dir / run["run"]
        corpus_of = {}  # by file name: the predictions hold resolved paths, the manifest relative ones
        with (folder.parent / "manifest.csv").open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                corpus_of[Path(row["path"]).name] = row.get("corpus") or "all"
        with (folder / "eval_test" / "predictions.csv").open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            labels = [c[2:] for c in reader.fieldnames if c.startswith("p_")]
            for row in reader:
                corpus = corpus_of.get(Path(row["path"]).name, "all")
                probs = {label: float(row[f"p_{label}"]) for label in labels}
                by_corpus[corpus].append({"label": canonical(row["label"]), "top": canonical(max(probs, key=probs.get))})
    return by_corpus, [canonical(x) for x in labels]


def summarise(by_corpus: dict[str, list[dict]], labels: list[str]) -> dict:
    offered = corpus_labels(by_corpus)
    out = {"labels": labels, "corpora": {}}
    for corpus, rows in sorted(by_corpus.items()):
        foreign = sorted(set(labels) - offered[corpus])
        taken = sum(r["top"] in foreign for r in rows)
        index = {label: i for i, label in enumerate(labels)}
        report = classification_report([index[r["label"]] for r in rows], [index[r["top"]] for r in rows], labels)
        f1 = {label: report["per_class"][label]["f1"] for label in labels}
        out["corpora"][corpus] = {"n": len(rows), "labels_never_offered": foreign, "answered_with_one_of_them": taken,
                                  "share": taken / len(rows) if rows else 0.0,
                                  "per_class_f1_over_all_labels": {k: float(v) for k, v in f1.items()}}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = summarise(*read_runs(args.cv_dir))
    out = args.out or args.cv_dir / "label_set.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for corpus, r in result["corpora"].items():
        print(f"{corpus:10} n={r['n']:5d}  answered with a label it never offered ({', '.join(r['labels_never_offered']) or '-'}): "
              f"{r['answered_with_one_of_them']} ({r['share']:.1%})")
        print("           per-class F1 over all labels: " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_class_f1_over_all_labels"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
