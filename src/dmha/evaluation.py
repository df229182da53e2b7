"""`dmha evaluate`: a model directory scored on one split of a manifest (macro-F1, accuracy, UAR, confusion)."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .data.manifest import ManifestError, read_manifest, require_splits
from .features import FeatureRef
from .metrics import classification_report, plot_confusion, write_confusion_csv
from .model import DMHA
from .modeldir import load_model_dir
from .pipeline import featurize, head_probabilities, write_errors

log = logging.getLogger(__name__)


def score_split(model: DMHA, refs: Sequence[FeatureRef], targets: Sequence[int], labels: Sequence[str],
                out: Path | None = None, names: Sequence[str] | None = None) -> dict:
    """Metrics of the head on cached features; with `out`, also confusion CSV/PNG and per-item predictions."""
    probs = head_probabilities(model, refs)
    preds = probs.argmax(axis=1)
    report = classification_report(list(targets), preds.tolist(), labels)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cm = np.asarray(report["confusion"])
        write_confusion_csv(cm, labels, out / "confusion.csv")
        plot_confusion(cm, labels, out / "confusion.png", f"macro-F1 {report['macro_f1']:.3f}, n={report['n']}")
        _write_predictions(out / "predictions.csv", names or [str(r.speech) for r in refs], targets, probs, labels)
    return report


def _write_predictions(path: Path, names, targets, probs: np.ndarray, labels) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "prediction", *[f"p_{label}" for label in labels]])
        for name, target, row in zip(names, targets, probs):
            writer.writerow([name, labels[target], labels[int(row.argmax())], *[f"{p:.6f}" for p in row]])


def evaluate(model_dir: str | Path, manifest: str | Path, split: str = "test", out: str | Path = "eval",
             progress: bool = True) -> dict:
    """Score MODEL_DIR on `split`; writes metrics.json, confusion.csv/png, predictions.csv, errors.tsv."""
    out = Path(out)
    bundle = load_model_dir(model_dir)
    items = read_manifest(manifest)
    require_splits(items, [split], manifest)
    items = [i for i in items if i.split == split]
    unknown = sorted({i.label for i in items} - set(bundle.labels))
    if unknown:
        raise ManifestError(f"{manifest}: label(s) {', '.join(unknown)} are not known to the model "
                            f"(model labels: {', '.join(bundle.labels)})")
    data = featurize(items, bundle.config.encoders, bundle.config.features, bundle.norm, progress)
    out.mkdir(parents=True, exist_ok=True)
    write_errors(data.errors, out / "errors.tsv")
    index = {label: k for k, label in enumerate(bundle.labels)}
    targets = [index[i.label] for i in data.items]
    report = score_split(bundle.model, data.refs, targets, bundle.labels, out, [str(i.path) for i in data.items])
    report.update({"split": split, "skipped": [{"path": p, "reason": r} for p, r in data.errors]})
    (out / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
