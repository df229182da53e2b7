"""From class probabilities to a label (paper §5.2): prior correction, per-class thresholds, hard voting.

Everything here works on plain (N, K) probability tables, so the same rules serve `evaluate` on
cached features, `predict` on live audio, ensembles and the web service.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .metrics import classification_report, macro_f1_from_counts

#: Candidate thresholds of the search: readable values, and 0.0 (= no change) comes first.
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0, 0.01), 2)
OBJECTIVES = ("ovr", "multiclass")


class DecisionError(ValueError):
    """A decision setting (prior, thresholds) that does not fit the model's labels."""


# --- prior correction -------------------------------------------------------------------------

def parse_prior(spec: str, labels: Sequence[str]) -> np.ndarray | None:
    """`none` → None; `uniform` → 1/K each; `label:weight,...` → those weights, normalised (others 0 not allowed)."""
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    if spec == "uniform":
        return np.full(len(labels), 1.0 / len(labels))
    weights = {}
    for part in spec.split(","):
        label, sep, value = part.partition(":")
        try:
            weights[label.strip()] = float(value) if sep else float("nan")
        except ValueError:
            weights[label.strip()] = float("nan")
    bad = [k for k, v in weights.items() if k not in labels or not v > 0]
    missing = [label for label in labels if label not in weights]
    if bad or missing:
        raise DecisionError(f"decision.prior {spec!r}: expected none, uniform or 'label:weight,...' with a "
                            f"positive weight for each of {', '.join(labels)}")
    target = np.array([weights[label] for label in labels])
    return target / target.sum()


def train_prior(class_counts: Mapping[str, int], labels: Sequence[str]) -> np.ndarray:
    """The training class prior from the counts recorded in the model directory (add-one smoothed)."""
    counts = np.array([class_counts.get(label, 0) for label in labels], dtype=float) + 1.0
    return counts / counts.sum()


def prior_correct(probs: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Bayes' rule for a changed prior: log p'(k|x) = log p(k|x) - log π_train(k) + log π_target(k) + const."""
    logp = np.log(np.clip(probs, 1e-12, None)) - np.log(source) + np.log(target)
    logp -= logp.max(axis=1, keepdims=True)
    shifted = np.exp(logp)
    return shifted / shifted.sum(axis=1, keepdims=True)


def restrict(probs: np.ndarray, allowed: Sequence[bool]) -> np.ndarray:
    """Probabilities (N, K) renormalised over the allowed classes (the others 0): a prediction among a
    subset of the model's labels (a corpus's own, or those a user asks for)."""
    mask = np.asarray(allowed, dtype=bool)
    out = np.where(mask[None, :], np.asarray(probs, dtype=float), 0.0)
    return out / np.clip(out.sum(axis=1, keepdims=True), 1e-12, None)


# --- per-class thresholds ---------------------------------------------------------------------

def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """The paper's rule: take the most probable class whose probability reaches its threshold,
    trying classes in order of probability; if none does, keep the most probable one."""
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    if thresholds is None or len(probs) == 0:
        return top
    order = np.argsort(-probs, axis=1, kind="stable")  # (N, K) classes, most probable first
    ranked = np.take_along_axis(probs, order, axis=1)
    passes = ranked >= np.asarray(thresholds)[order]
    first = passes.argmax(axis=1)  # first passing rank (0 when none passes: argmax of all-False)
    return np.where(passes.any(axis=1), order[np.arange(len(probs)), first], top)


def _binary_macro_f1(positive: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 of a one-vs-rest problem (the class and the rest as two classes) for each column of
    `predicted` (N, G) boolean."""
    pos = positive[:, None]
    tp, fp = (predicted & pos).sum(0), (predicted & ~pos).sum(0)
    fn, tn = (~predicted & pos).sum(0), (~predicted & ~pos).sum(0)
    # the two classes on axis 0: the negative class's true positives are the true negatives, and so on
    return macro_f1_from_counts(np.stack([tp, tn]), np.stack([fp, fn]), np.stack([fn, fp]))


def tune_thresholds(probs: np.ndarray, targets: Sequence[int], objective: str = "ovr",
                    grid: np.ndarray = THRESHOLD_GRID, sweeps: int = 3) -> np.ndarray:
    """One threshold per class, searched on `grid` (ties → the lowest threshold, i.e. the least change).

    `ovr` (the paper): class k against the rest as one negative class; the threshold on p_k that
    maximises that binary problem's macro-F1. `multiclass`: coordinate ascent on the macro-F1 of
    the final decision rule itself (a few sweeps over the classes), which can also trade classes off.
    """
    if objective not in OBJECTIVES:
        raise DecisionError(f"threshold objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    k = probs.shape[1]
    thresholds = np.zeros(k)
    if len(probs) == 0:
        return thresholds
    if objective == "ovr":
        for c in range(k):
            scores = _binary_macro_f1(targets == c, probs[:, c][:, None] >= grid[None, :])
            thresholds[c] = grid[int(scores.argmax())]
        return thresholds
    labels = [str(i) for i in range(k)]
    best = classification_report(targets, apply_thresholds(probs, thresholds), labels)["macro_f1"]
    for _ in range(sweeps):
        improved = False
        for c in range(k):
            for t in grid:
                trial = thresholds.copy()
                trial[c] = t
                score = classification_report(targets, apply_thresholds(probs, trial), labels)["macro_f1"]
                if score > best + 1e-12:
                    best, thresholds, improved = score, trial, True
        if not improved:
            break
    return thresholds


# --- hard voting ------------------------------------------------------------------------------

def hard_vote(member_preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority vote over members (M, N) → (N,); a tie goes to the first member (in the given order)
    whose vote is among the tied classes, so order members by dev macro-F1, best first."""
    member_preds = np.asarray(member_preds)
    m, n = member_preds.shape
    counts = np.zeros((n, num_classes), dtype=int)
    for row in member_preds:
        counts[np.arange(n), row] += 1
    tied = counts == counts.max(axis=1, keepdims=True)  # (N, K) classes with the most votes
    member_is_tied = tied[np.arange(n)[None, :], member_preds]  # (M, N)
    first = member_is_tied.argmax(axis=0)  # some member always voted for a tied class
    return member_preds[first, np.arange(n)]


# --- one model's decision ---------------------------------------------------------------------

class DecisionRule:
    """How one model turns probabilities into labels: optional prior correction, then thresholds, among
    all of the model's labels or a subset of them (`allowed`: a corpus's own labels, or those a user asks
    for; the probabilities are renormalised over them and the others are never chosen).

    Thresholds are tuned on the probabilities the rule produces (after prior correction), so the
    two always stack in this order.
    """

    def __init__(self, labels: Sequence[str], thresholds: np.ndarray | None = None,
                 prior_source: np.ndarray | None = None, prior_target: np.ndarray | None = None,
                 allowed: Sequence[bool] | None = None):
        self.labels = list(labels)
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=float)
        self.prior_source, self.prior_target = prior_source, prior_target
        self.allowed = None if allowed is None or all(allowed) else np.asarray(allowed, dtype=bool)
        if self.allowed is not None and self.thresholds is not None:
            self.thresholds = np.where(self.allowed, self.thresholds, np.inf)  # a left-out class never passes

    def among(self, labels: Sequence[str]) -> "DecisionRule":
        """The same rule choosing among `labels` only (a subset of the model's, any order)."""
        unknown = [label for label in labels if label not in self.labels]
        if unknown or not labels:
            raise DecisionError(f"labels {', '.join(unknown) or '(none)'}: choose among the model's labels "
                                f"({', '.join(self.labels)})")
        allowed = [label in set(labels) for label in self.labels]
        if self.allowed is not None:
            allowed = [a and b for a, b in zip(allowed, self.allowed)]
        thresholds = None if self.thresholds is None else np.where(np.isinf(self.thresholds), 0.0, self.thresholds)
        return DecisionRule(self.labels, thresholds, self.prior_source, self.prior_target, allowed)

    def probabilities(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities under the target prior (unchanged without prior correction), over the allowed labels."""
        probs = np.asarray(probs, dtype=float)
        if self.prior_target is not None and len(probs):
            probs = prior_correct(probs, self.prior_source, self.prior_target)
        if self.allowed is not None and len(probs):
            probs = restrict(probs, self.allowed)
        return probs

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """(N, K) head probabilities → (N,) class indices."""
        return apply_thresholds(self.probabilities(probs), self.thresholds)
