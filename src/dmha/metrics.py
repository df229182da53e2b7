"""The challenge's metrics: macro-F1 for categories (with accuracy and UAR beside it) and, for emotional
attributes, the concordance correlation coefficient (with Pearson's r and the RMSE beside it)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """macro_f1, accuracy, uar, per_class {label: precision, recall, f1, support}, n, confusion."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0  # macro averages over classes that occur in the reference
    n = int(cm.sum())
    return {
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "n": n,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def write_confusion_csv(cm: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Counts with a header row of predicted labels and a first column of true labels."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\pred", *labels])
        for label, row in zip(labels, np.asarray(cm)):
            writer.writerow([label, *row.tolist()])


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix as PNG (the paper's Fig. 2 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 1.0 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attribute_report(pred: Sequence[float], ref: Sequence[float]) -> dict:
    """ccc, pearson, rmse and n of predictions against references in the attribute's own scale; rows
    whose reference is NaN (an empty manifest cell) are left out. CCC and r use population moments."""
    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    keep = ~np.isnan(ref)
    pred, ref = pred[keep], ref[keep]
    n = int(keep.sum())
    if n < 2:
        return {"ccc": float("nan"), "pearson": float("nan"), "rmse": float("nan") if not n else
                float(np.sqrt(np.mean((pred - ref) ** 2))), "n": n}
    dp, dr = pred - pred.mean(), ref - ref.mean()
    cov, var_p, var_r = float(np.mean(dp * dr)), float(np.mean(dp * dp)), float(np.mean(dr * dr))
    ccc = 2 * cov / (var_p + var_r + (pred.mean() - ref.mean()) ** 2) if var_p + var_r > 0 else 0.0
    pearson = cov / np.sqrt(var_p * var_r) if var_p > 0 and var_r > 0 else 0.0
    return {"ccc": float(ccc), "pearson": float(pearson), "rmse": float(np.sqrt(np.mean((pred - ref) ** 2))), "n": n}


def attributes_report(names: Sequence[str], pred: np.ndarray, ref: np.ndarray) -> dict:
    """{"attributes": {name: attribute_report}, "mean_ccc": mean over attributes} for (N, A) arrays in
    the attributes' own scales (the challenge's Task 2 score is the mean CCC over arousal, valence, dominance)."""
    per = {name: attribute_report(pred[:, a], ref[:, a]) for a, name in enumerate(names)}
    cccs = [r["ccc"] for r in per.values()]
    return {"attributes": per, "mean_ccc": float(np.mean(cccs)) if cccs else float("nan")}


def plot_attribute(pred: Sequence[float], ref: Sequence[float], name: str, bounds: tuple[float, float],
                   path: Path) -> None:
    """Predicted against reference values of one attribute, with the identity line (for report.html)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, ref = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    keep = ~np.isnan(ref)
    scores = attribute_report(pred, ref)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(ref[keep], pred[keep], s=6, alpha=0.4)
    ax.plot(bounds, bounds, color="grey", linewidth=1)
    ax.set_xlim(bounds), ax.set_ylim(bounds)
    ax.set_xlabel(f"reference {name}"), ax.set_ylabel(f"predicted {name}")
    ax.set_title(f"{name}: CCC {scores['ccc']:.3f}, r {scores['pearson']:.3f}, n={scores['n']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
