#!/usr/bin/env python
"""How much a speaker-normalised model gains from how much of which enrolment, on a `dmha cv` folder.

Each test clip is scored with its speaker's statistics taken from: nothing (each clip alone, what
`predict` of one file does); k other test recordings of the speaker (k = 1, 2, 4, 8, 16, drawn at
random, 3 draws); the speaker's neutral recordings only; the recordings of one emotion only (each
emotion in turn); and all of the speaker's test recordings (what `dmha cv` reports as grouped). The
clip itself is never part of its own enrolment except in "all" (as `--same-speaker`). Statistics
come from the cv's feature store; only the heads run, so a whole cv takes minutes.

    python benchmarks/enrolment.py CV_DIR [--out CV_DIR/enrolment.json]

Per variant: macro-F1 per fold (mean over the cv's seeds), the mean and Student-t 95% interval over
folds, and the mean enrolment in seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_peers import fold_splits, interval, read_cv_dir  # noqa: E402

from dmha.evaluation import head_outputs  # noqa: E402
from dmha.extraction import features_for  # noqa: E402
from dmha.metrics import macro_f1_score  # noqa: E402
from dmha.modeldir import load_model_dir  # noqa: E402
from dmha.speaker_norm import Moments  # noqa: E402

SIZES = (1, 2, 4, 8, 16)
DRAWS = 3
FRAME_RATE = 50.0  # Whisper and the SSL encoders: frames per second of speech


def enrolments(test: np.ndarray, speakers: np.ndarray, labels: np.ndarray, neutral: str | None,
               rng: np.random.Generator) -> dict[str, list[list[int | None]]]:
    """Variant → draws → for each test row, the rows whose moments make its speaker's statistics
    (None: the clip alone)."""
    by_speaker = {s: [int(i) for i in test if speakers[i] == s] for s in sorted(set(speakers[test].tolist()))}
    others = {int(i): [j for j in by_speaker[speakers[i]] if j != i] for i in test}
    variants: dict[str, list] = {"alone": [[None] * len(test)],
                                 "all": [[by_speaker[speakers[i]] for i in test]]}
    for k in SIZES:
        variants[f"k={k}"] = [[[int(j) for j in rng.choice(others[int(i)], min(k, len(others[int(i)])), replace=False)]
                               or None for i in test] for _ in range(DRAWS)]
    for emotion in sorted(set(labels[test].tolist())):
        name = "neutral only" if emotion == neutral else f"{emotion} only"
        variants[name] = [[[j for j in others[int(i)] if labels[j] == emotion] or None for i in test]]
    return variants


def score(model, refs: list, moments: list[Moments], rows: Sequence, enrolled: list, truth: np.ndarray,
          k: int) -> tuple[float, float]:
    """Macro-F1 of the head when each row's speaker statistics are the summed moments of its enrolment,
    and the mean enrolment in seconds."""
    seen, frames = [], []
    for i, group in zip(rows, enrolled):
        if group is None:
            seen.append(replace(refs[i], speaker=None))
            frames.append(0.0)
        else:
            total = moments[group[0]]
            for j in group[1:]:
                total = total + moments[j]
            seen.append(replace(refs[i], speaker=total))
            frames.append(total.frames)
    probs, _ = head_outputs(model, seen)
    return macro_f1_score(truth, probs.argmax(1), k), float(np.mean(frames)) / FRAME_RATE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path, help="a finished `dmha cv` folder of a feature_norm=speaker recipe")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: CV_DIR/enrolment.json)")
    args = parser.parse_args(argv)
    cv = read_cv_dir(args.cv_dir)
    items, splits = fold_splits(args.cv_dir, cv)
    first = load_model_dir(args.cv_dir / cv["runs"][0]["run"] / "model")
    if first.config.model.feature_norm != "speaker":
        raise SystemExit(f"enrolment: {args.cv_dir}: the cv's models do not normalise per speaker "
                         f"(model.feature_norm={first.config.model.feature_norm})")
    data = features_for(items, first.config, norm=first.norm, progress=True)
    if len(data.items) != len(items):
        raise SystemExit(f"enrolment: {len(items) - len(data.items)} item(s) have no features: {data.errors[:1]}")
    refs, moments = data.refs, [Moments.of(ref.speech()) for ref in data.refs]
    labels_of = np.array([i.label for i in items])
    speakers = np.array([i.speaker for i in items])
    neutral = "neutral" if "neutral" in set(labels_of.tolist()) else None
    rng = np.random.default_rng(0)
    per_variant: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for fold, idx in zip(cv["folds"], splits):
        test = idx["test"]
        variants = enrolments(test, speakers, labels_of, neutral, rng)
        for name, draws in variants.items():
            fold_scores, fold_seconds = [], []
            for run in (r for r in cv["runs"] if r["fold"] == fold["fold"]):
                bundle = load_model_dir(args.cv_dir / run["run"] / "model")
                code = {label: n for n, label in enumerate(bundle.labels)}
                truth = np.array([code[v] for v in labels_of[test]])
                for enrolled in draws:
                    f1, secs = score(bundle.model, refs, moments, test, enrolled, truth, len(bundle.labels))
                    fold_scores.append(f1)
                    fold_seconds.append(secs)
            per_variant.setdefault(name, []).append(float(np.mean(fold_scores)))
            seconds.setdefault(name, []).append(float(np.mean(fold_seconds)))
        print(f"fold {fold['name']}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in per_variant.items()), flush=True)
    result = {"cv": Path(cv["manifest"]).name, "seeds": cv["seeds"], "folds": [f["name"] for f in cv["folds"]],
              "draws": DRAWS, "variants": {name: {"per_fold": v, **interval(v), "enrolment_s": float(np.mean(seconds[name]))}
                                           for name, v in per_variant.items()}}
    out = args.out or args.cv_dir / "enrolment.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, row in result["variants"].items():
        print(f"{name:>18}: macro-F1 {row['mean']:.4f} [{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}], "
              f"enrolment {row['enrolment_s']:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
