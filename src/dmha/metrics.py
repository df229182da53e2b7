"""The challenge's metrics, one definition each: macro-F1 for categories (with accuracy and UAR beside it)
and, for emotional attributes, the concordance correlation coefficient (with Pearson's r and the RMSE).

Every score dmha reports comes from here: training's dev macro-F1 (from torchmetrics' confusion matrix,
which syncs over DDP ranks), `evaluate`, `cv`, threshold tuning, the benchmarks and their peers. Macro-F1
averages the F1 of every class that occurs in the reference or in the predictions (scikit-learn's
`f1_score(average="macro")`, the rule of the challenge's scorer): predicting a class the reference never
has costs a zero in the mean. UAR averages recall over the reference's classes (balanced accuracy).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2·tp / (2·tp + fp + fn), 0 where a class is neither in the reference nor predicted."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.broadcast(tp, denom).shape), where=denom > 0)


def macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes (axis 0) that occur in the reference or the predictions; other axes are
    kept, so one call scores many decision rules at once (e.g. every threshold of a grid)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    present = (tp + fp + fn) > 0
    total = np.where(present, f1_from_counts(tp, fp, fn), 0.0).sum(0)
    return np.divide(total, present.sum(0), out=np.zeros_like(total), where=present.sum(0) > 0)


def macro_f1(cm: np.ndarray | torch.Tensor) -> float | np.ndarray:
    """Macro-F1 of a (K, K) confusion matrix (rows = true class): a float; of a stack (..., K, K): an
    array of the leading shape (e.g. every draw of a bootstrap at once)."""
    cm = np.asarray(cm.detach().cpu() if isinstance(cm, torch.Tensor) else cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)  # (..., K)
    fp, fn = cm.sum(-2) - tp, cm.sum(-1) - tp
    score = macro_f1_from_counts(*(np.moveaxis(x, -1, 0) for x in (tp, fp, fn)))
    return float(score) if score.ndim == 0 else score


def macro_f1_score(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Macro-F1 of integer class codes in [0, num_classes)."""
    return macro_f1(confusion_matrix(y_true, y_pred, num_classes))


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """macro_f1, accuracy, uar, per_class {label: precision, recall, f1, support}, n, confusion."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    in_reference = support > 0  # recall (UAR) is defined for the reference's classes only
    n = int(cm.sum())
    return {
        "macro_f1": macro_f1(cm),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "uar": float(recall[in_reference].mean()) if in_reference.any() else 0.0,
        "n": n,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1_from_counts(tp, predicted - tp, support - tp),
                                         support)
        },
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def expected_calibration_error(probs: np.ndarray, targets: Sequence[int], bins: int = 15) -> float:
    """ECE: the clips binned by confidence (the top probability, `bins` equal-width bins over [0, 1]);
    the mean over bins, weighted by their share of clips, of |accuracy − mean confidence|."""
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    if not len(probs):
        return float("nan")
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # bin b: [b/bins, (b+1)/bins), the last closed
    gap = sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any())
    return float(gap / len(probs))


def reliability(probs: np.ndarray, targets: Sequence[int], bins: int = 15) -> list[dict]:
    """Per confidence bin (as in the ECE): its range, clips, mean confidence and accuracy (a reliability diagram)."""
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else None} for b in range(bins)]


def brier_score(probs: np.ndarray, targets: Sequence[int]) -> float:
    """Multi-class Brier score: the mean over clips of Σ_k (p_k − [k = target])², 0 (best) to 2."""
    probs = np.asarray(probs, dtype=float)
    if not len(probs):
        return float("nan")
    onehot = np.eye(probs.shape[1])[np.asarray(targets)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


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


def concordance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation coefficient 2·cov / (var_p + var_t + (mean_p − mean_t)²) per column
    of (N, A), over the rows where the target is not NaN (population moments, as the challenge scores).
    Differentiable: the attribute loss is 1 − CCC of a batch, and reports call it on float64 arrays."""
    keep = ~torch.isnan(target)
    n = keep.sum(0).clamp(min=1)
    t = torch.where(keep, target, torch.zeros_like(target))
    p = torch.where(keep, pred, torch.zeros_like(pred))
    mean_p, mean_t = p.sum(0) / n, t.sum(0) / n
    dp, dt = (p - mean_p) * keep, (t - mean_t) * keep
    cov, var_p, var_t = (dp * dt).sum(0) / n, (dp * dp).sum(0) / n, (dt * dt).sum(0) / n
    return 2 * cov / (var_p + var_t + (mean_p - mean_t) ** 2).clamp(min=1e-12)


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
    var_p, var_r = float(np.mean(dp * dp)), float(np.mean(dr * dr))
    ccc = float(concordance(torch.from_numpy(pred)[:, None], torch.from_numpy(ref)[:, None])[0]) if var_p + var_r > 0 else 0.0
    pearson = float(np.mean(dp * dr)) / np.sqrt(var_p * var_r) if var_p > 0 and var_r > 0 else 0.0
    return {"ccc": ccc, "pearson": float(pearson), "rmse": float(np.sqrt(np.mean((pred - ref) ** 2))), "n": n}


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
