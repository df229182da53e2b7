#!/usr/bin/env python
"""Cross-corpus: dmha and the probe trained on one corpus and scored on another they never saw, and
both corpora trained together (within speaker cv), each clip alone and grouped by speaker.

Rows:
- train RAVDESS → test CREMA-D, train CREMA-D → test RAVDESS: `dmha train` on the source corpus's own
  split (its dev speakers choose the checkpoint), `dmha evaluate` on every clip of the target corpus,
  scored on the labels both know (RAVDESS's calm and surprised have no CREMA-D clips; `fearful` is
  CREMA-D's `fear`); the probe (b) and the speaker-normalised probe (c) likewise (layer and C chosen on
  the source's dev speakers), their prediction the most probable of the shared labels.
- both → each: a `dmha cv` over both manifests (folds within each corpus) and its `cv_peers.py`,
  per corpus; beside it that corpus's single-corpus cv: fold by fold when it has the same K (the same
  folds), else the two means, unpaired.

    python benchmarks/cross_corpus.py --ravdess R.csv --crema C.csv [--seeds 0,1,2] \\
        [--joint JOINT_CV_DIR ...] [--single ravdess=CV_DIR --single crema-d=CV_DIR] [--out DIR]

Writes OUT/cross_corpus.json (runs and models under OUT/runs/, not committed) and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cv_peers  # noqa: E402
import ravdess_peers as peers  # noqa: E402

from dmha.config import load, to_dict  # noqa: E402
from dmha.corpora import canonical, label_scope  # noqa: E402
from dmha.data.manifest import read_manifest, write_manifest  # noqa: E402
from dmha.evaluation import evaluate  # noqa: E402
from dmha.experiment import train  # noqa: E402
from dmha.metrics import macro_f1_score  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def dmha_transfer(source: Path, target_all: Path, runs: Path, name: str, seeds, overrides) -> dict:
    """dmha trained on `source` (its own split), scored on every clip of the target, per seed."""
    per_seed = []
    for seed in seeds:
        run = runs / f"{name}_seed{seed}"
        train(source, run, load(None, [*overrides, f"seed={seed}"]), progress=False)
        report = evaluate(run / "model", target_all, "test", runs / f"{name}_seed{seed}_eval", progress=False, report=False)
        per_seed.append({"seed": seed, "alone": report["macro_f1"], "grouped": report.get("grouped", {}).get("macro_f1"),
                         "n": report["n"], "labels_scored": report.get("labels_scored"), "notes": report.get("notes", [])})
        print(f"  dmha {name} seed {seed}: alone {report['macro_f1']:.4f}", flush=True)
    return {"per_seed": per_seed, **{v: float(np.mean([s[v] for s in per_seed])) for v in ("alone", "grouped")
                                     if all(s[v] is not None for s in per_seed)}}


def probe_transfer(source_items, target_items, config: dict) -> dict:
    """Probes (b) and (c) fitted on the source's train speakers, chosen on its dev speakers, predicting
    every target clip among the labels both corpora know."""
    items = source_items + target_items
    n_source = len(source_items)
    idx = {"train": np.array([k for k, i in enumerate(source_items) if i.split == "train"]),
           "dev": np.array([k for k, i in enumerate(source_items) if i.split == "dev"]),
           "test": np.arange(n_source, len(items))}
    y = np.array([canonical(i.label) for i in items])
    scope = label_scope(sorted(set(y[:n_source])), sorted(set(y[n_source:])))
    shared = [label for label, on in zip(sorted(set(y[:n_source])), scope.allowed) if on]
    keep = np.array([label in shared for label in y[idx["test"]]])
    truth = np.array([shared.index(label) for label in y[idx["test"]][keep]])
    speakers = np.array([f"{'source' if n < n_source else 'target'}/{i.speaker}" for n, i in enumerate(items)])
    pooled = cv_peers.store_pooled_states(items, config)
    moments = cv_peers.store_moments(items, config)
    prior = config["model"]["speaker_prior_frames"]
    out = {"labels": shared, "n": int(keep.sum())}
    for tag, feats in (("b", pooled), ("c", cv_peers.speaker_normalised_means(moments, speakers.tolist(), idx, prior))):
        run = cv_peers.run_peer(tag, feats, y, idx, sorted(set(y)))
        columns = [sorted(set(y)).index(label) for label in shared]
        pred = run["scores"][keep][:, columns].argmax(1)
        out[tag] = macro_f1_score(truth, pred, len(shared))
        print(f"  probe ({tag}): {out[tag]:.4f}", flush=True)
    return out


def joint_rows(joint: Sequence[Path], single: dict[str, Path]) -> list[dict]:
    """Per corpus of each joint cv: dmha and the probes (from its peers.json), and the corpus's own
    single-corpus cv on the same folds, fold by fold."""
    rows = []
    for folder in joint:
        cv = json.loads((folder / "cv.json").read_text(encoding="utf-8"))
        peers_json = json.loads((folder / "peers.json").read_text(encoding="utf-8")) if (folder / "peers.json").is_file() else {}
        for corpus, figures in cv["summary"]["per_corpus"].items():
            row = {"cv": folder.name, "corpus": corpus, "folds": len(cv["folds"]), "seeds": cv["seeds"],
                   "alone": figures["macro_f1"], "grouped": figures.get("macro_f1_grouped")}
            part = peers_json.get("per_corpus", {}).get(corpus, {})
            row.update({f"probe_{t}": {"mean": p["mean"], "per_fold": p["per_fold"]} for t, p in part.get("peers", {}).items()})
            if corpus in single:
                own = json.loads((single[corpus] / "cv.json").read_text(encoding="utf-8"))
                if len(own["folds"]) == len(cv["folds"]):
                    alone = [own["summary"]["per_fold"][str(f["fold"])]["macro_f1"] for f in own["folds"]]
                    diff = [a - b for a, b in zip(figures["macro_f1"]["per_fold"], alone)]
                    row["single_corpus"] = {"cv": single[corpus].name, "paired": True, "alone_per_fold": alone,
                                            "alone": own["summary"]["macro_f1"],
                                            "joint_minus_single": {"per_fold": diff, **cv_peers.interval(diff),
                                                                   **cv_peers.fold_tests(diff)}}
                else:  # other folds (K differs): the two cv means, compared unpaired
                    mean = own["summary"]["macro_f1"]["mean"]
                    row["single_corpus"] = {"cv": single[corpus].name, "paired": False, "folds": len(own["folds"]),
                                            "alone": own["summary"]["macro_f1"],
                                            "joint_minus_single": {"mean": figures["macro_f1"]["mean"] - mean}}
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True, help="RAVDESS manifest (dmha prepare ravdess)")
    parser.add_argument("--crema", type=Path, required=True, help="CREMA-D manifest (dmha prepare crema-d)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--joint", type=Path, action="append", default=[], help="a finished cv over both manifests")
    parser.add_argument("--single", action="append", default=[], metavar="CORPUS=CV_DIR",
                        help="a corpus's own cv, to compare the joint cv's figure fold by fold")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cross_corpus")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    single = {k: Path(v) for k, _, v in (s.partition("=") for s in args.single)}
    runs = args.out / "runs"
    manifests = {"ravdess": args.ravdess, "crema-d": args.crema}
    items = {name: read_manifest(path) for name, path in manifests.items()}
    config = to_dict(load(None, args.overrides))
    result = {"seeds": seeds, "overrides": args.overrides, "transfer": {}}
    for source, target in (("ravdess", "crema-d"), ("crema-d", "ravdess")):
        target_all = runs / f"{target}_all.csv"  # every clip of the target corpus is test
        write_manifest([dataclasses.replace(i, split="test") for i in items[target]], target_all)
        print(f"train {source} → test {target}", flush=True)
        result["transfer"][f"{source}->{target}"] = {
            "dmha": dmha_transfer(manifests[source], target_all, runs, f"{source}_to_{target}", seeds, args.overrides),
            "probes": probe_transfer(items[source], [dataclasses.replace(i, split="test") for i in items[target]], config)}
    result["joint"] = joint_rows(args.joint, single)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cross_corpus.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"wrote {args.out / 'cross_corpus.json'}")
    return 0


def format_table(result: dict) -> str:
    lines = [f"{'trained on → tested on':34} {'dmha alone':>10} {'grouped':>8} {'probe b':>8} {'probe c':>8}  labels"]
    for pair, row in result["transfer"].items():
        d, p = row["dmha"], row["probes"]
        lines.append(f"{pair.replace('->', ' → '):34} {d['alone']:10.4f} {d.get('grouped', float('nan')):8.4f} "
                     f"{p['b']:8.4f} {p['c']:8.4f}  {', '.join(p['labels'])}")
    for row in result["joint"]:
        name = f"both → {row['corpus']} ({row['folds']}-fold cv)"
        line = (f"{name:34} {row['alone']['mean']:10.4f} {row['grouped']['mean'] if row['grouped'] else float('nan'):8.4f} "
                f"{row.get('probe_b', {}).get('mean', float('nan')):8.4f} {row.get('probe_c', {}).get('mean', float('nan')):8.4f}")
        if "single_corpus" in row:
            diff = row["single_corpus"]["joint_minus_single"]
            line += f"  joint − {row['corpus']} alone: {diff['mean']:+.4f}"
            line += (f", better on {diff['wins']}/{row['folds']} folds" if row["single_corpus"]["paired"]
                     else f" (unpaired: its own cv has {row['single_corpus']['folds']} folds)")
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
