"""Calibrated probabilities: one temperature T fitted on dev speakers, so that when the model says 0.8 it
is right about 80% of the time.

A head trained with early stopping on a small corpus is over-confident (its training clips are fitted
almost perfectly). Temperature scaling (Guo et al., 2017) divides the logits by T before the softmax:
it changes no prediction (the argmax stays), only how sure each one is. T is fitted by minimising the
negative log-likelihood of held-out speakers' clips, each clip alone (the headline), and stored in the
model directory as calibration.json, which every path applies (evaluate, predict, the Python API,
serve, ensembles per member, the ONNX graph). `dmha train` fits it on its dev split; `dmha calibrate`
fits it again on any labelled split.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_write_text
from .metrics import brier_score, expected_calibration_error

log = logging.getLogger(__name__)
CALIBRATION_FILE = "calibration.json"
TEMPERATURE_RANGE = (0.05, 20.0)  # beyond these the fit is degenerate (e.g. a split the model has memorised)


class CalibrationError(ValueError):
    """A calibration file that cannot be used, or data that cannot fit one."""


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(logits / T) (1-D, convex in log T)."""
    logits_t = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), targets_t)
        loss.backward()
        return loss

    optimiser.step(closure)
    low, high = TEMPERATURE_RANGE
    return float(np.clip(log_t.exp().item(), low, high))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_payload(logits: np.ndarray, targets: np.ndarray, source: str) -> dict:
    """Fit T and say what it did on the clips it was fitted on (ECE and Brier before and after)."""
    if len(logits) < 2 or len(set(np.asarray(targets).tolist())) < 2:
        raise CalibrationError(f"{source}: needs at least two clips of two classes to fit a temperature")
    temperature = fit_temperature(logits, targets)
    before, after = softmax(logits), softmax(logits, temperature)
    return {"method": "temperature", "temperature": temperature, "fitted_on": source, "n": int(len(logits)),
            "scored": "each clip alone",
            "ece_before": expected_calibration_error(before, targets), "ece_after": expected_calibration_error(after, targets),
            "brier_before": brier_score(before, targets), "brier_after": brier_score(after, targets)}


def read_calibration(directory: Path) -> dict | None:
    """calibration.json if present (a positive, finite temperature), else None (T = 1)."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        temperature = float(payload["temperature"])
    except (ValueError, KeyError, TypeError) as err:
        raise CalibrationError(f"{path}: invalid calibration file ({err})") from err
    if not (np.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"{path}: the temperature must be a positive number, got {temperature!r}")
    return payload


def write_calibration(directory: Path, payload: dict) -> None:
    atomic_write_text(Path(directory) / CALIBRATION_FILE, json.dumps(payload, indent=2) + "\n")


def calibrate(model_dir: str | Path, manifest, split: str = "dev", progress: bool = True) -> dict:
    """`dmha calibrate`: fit the temperature of a model directory (every member of an ensemble) on the
    labelled clips of `split`, each clip alone, and write calibration.json into it.

    Returns {member: payload}. Raises CalibrationError when the split cannot fit a temperature.

    Example:
        >>> calibrate("runs/ravdess/model", "ravdess.csv", "dev")["model"]["temperature"]  # doctest: +SKIP
        1.84
    """
    from .ensemble import load_members
    from .evaluation import _split_items, head_logits, score_members

    members = load_members(model_dir, use_thresholds=False, encoder_device=None)
    items, scope = _split_items(members, manifest, split, strict=True)
    scored = score_members(members, items, progress)
    targets = np.array([scope.index[item.label] for item in scored.items])
    summary = {}
    for member, refs in zip(members, scored.member_refs):
        logits = head_logits(member.bundle.model, [replace(r, speaker=None) for r in refs])
        payload = calibration_payload(logits, targets, f"{Path(str(manifest)).name} ({split}, {len(targets)} clips)")
        if member.bundle.thresholds is not None:
            log.warning("%s: thresholds.json was tuned on uncalibrated probabilities; re-run tune-thresholds",
                        member.bundle.directory)
        write_calibration(member.bundle.directory, payload)
        summary[member.name] = payload
    return summary
