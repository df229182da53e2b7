"""Hard-voting ensembles (paper §5.2) and the one loader that treats a model and an ensemble alike.

An ensemble directory is self-contained: ensemble.json plus a copy of every member's model
directory under members/, ordered by dev macro-F1 (best first), which is also the tie-break order.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .decision import DecisionRule, apply_thresholds, hard_vote
from .fileio import atomic_write_text
from .calibration import CALIBRATION_FILE
from .modeldir import THRESHOLDS_FILE, TRAINING_LOG_FILE, ModelBundle, ModelDirError, load_model_dir
from .targets import attributes_of, unscaled

ENSEMBLE_FILE = "ensemble.json"
_MEMBER_FILES = ("config.json", "model.safetensors", "labels.json", THRESHOLDS_FILE, CALIBRATION_FILE, TRAINING_LOG_FILE)


@dataclass
class Member:
    """One model of a predictor: its loaded directory and the decision rule it applies."""

    name: str
    bundle: ModelBundle
    rule: DecisionRule


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def model_name(model_dir: Path) -> str:
    """RUN/model → RUN; any other directory → its own name."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def training_log(model_dir: Path) -> Path | None:
    """The per-epoch training log: inside the model directory, else the run's Lightning CSV log."""
    for path in (Path(model_dir) / TRAINING_LOG_FILE, Path(model_dir).parent / "logs" / "metrics.csv"):
        if path.is_file():
            return path
    return None


def make_ensemble(model_dirs: Sequence[str | Path], out: str | Path) -> dict:
    """Copy the members into OUT/members/ (best dev macro-F1 first) and write OUT/ensemble.json."""
    out = Path(out)
    if len(model_dirs) < 2:
        raise ModelDirError("an ensemble needs at least two model directories")
    if out.exists() and any(out.iterdir()):
        raise ModelDirError(f"{out}: exists and is not empty; choose a new --out folder")
    bundles = []
    for model_dir in model_dirs:
        if is_ensemble(model_dir):
            raise ModelDirError(f"{model_dir}: is an ensemble; list its member model directories instead")
        bundles.append((Path(model_dir), load_model_dir(model_dir)))
    labels = bundles[0][1].labels
    for model_dir, bundle in bundles[1:]:
        if bundle.labels != labels:
            raise ModelDirError(f"{model_dir}: labels {bundle.labels} differ from {bundles[0][0]}'s {labels}")
        _check_targets(model_dir, bundle, bundles[0][0], bundles[0][1])
    # Stable sort: members without a recorded dev score keep their given order, after the others.
    bundles.sort(key=lambda mb: -_dev_score(mb[1]))
    members, used = [], set()
    for rank, (model_dir, bundle) in enumerate(bundles):
        name = model_name(model_dir)
        while name in used:
            name = f"{name}-{rank}"
        used.add(name)
        target = out / "members" / f"{rank}-{name}"
        target.mkdir(parents=True)
        for file in _MEMBER_FILES:
            if (model_dir / file).is_file():
                shutil.copy2(model_dir / file, target / file)
        log_path = training_log(model_dir)
        if log_path is not None and not (target / TRAINING_LOG_FILE).exists():
            shutil.copy2(log_path, target / TRAINING_LOG_FILE)
        members.append({"name": name, "dir": f"members/{rank}-{name}",
                        "dev_macro_f1": bundle.meta.get("dev_macro_f1"),
                        "speech_encoder": bundle.speech.name, "attention": bundle.config.model.attention,
                        "loss": bundle.config.loss, "thresholds": bundle.thresholds is not None})
    payload = {"format_version": 1, "dmha_version": __version__, "voting": "hard", "tie_break": "member order",
               "labels": labels, "members": members}
    atomic_write_text(out / ENSEMBLE_FILE, json.dumps(payload, indent=2))
    return payload


def _dev_score(bundle) -> float:
    """The member's dev score under its own criterion (macro-F1 for category models; -inf if none)."""
    criterion = bundle.meta.get("dev_criterion", "macro_f1")
    value = bundle.meta.get(f"dev_{criterion}")
    return float(value) if value is not None else float("-inf")


def load_members(path: str | Path, device: str = "cpu", use_thresholds: bool = True,
                 prior: str | None = None, encoder_device: str | None = "same") -> list[Member]:
    """A model directory → one member; an ensemble directory → its members, in tie-break order.
    The heads go on `device`; the encoders too, unless `encoder_device` says otherwise (load_model_dir)."""
    path = Path(path)
    if not is_ensemble(path):
        bundle = load_model_dir(path, device, encoder_device)
        return [Member(model_name(path), bundle, bundle.decision_rule(use_thresholds, prior))]
    try:
        payload = json.loads((path / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        entries = [(str(m["name"]), str(m["dir"])) for m in payload["members"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelDirError(f"{path / ENSEMBLE_FILE}: invalid ensemble file ({err})") from err
    members = []
    for name, rel in entries:
        member_dir = (path / rel).resolve()
        if not member_dir.is_relative_to(path.resolve()):  # a stranger's ensemble.json may not point elsewhere
            raise ModelDirError(f"{path / ENSEMBLE_FILE}: member {name!r} lies outside the ensemble directory")
        bundle = load_model_dir(member_dir, device, encoder_device)
        members.append(Member(name, bundle, bundle.decision_rule(use_thresholds, prior)))
    if not members:
        raise ModelDirError(f"{path / ENSEMBLE_FILE}: lists no members")
    for member in members[1:]:
        if member.bundle.labels != members[0].bundle.labels:
            raise ModelDirError(f"{path}: member {member.name!r} has other labels than {members[0].name!r}")
        _check_targets(path / member.name, member.bundle, members[0].name, members[0].bundle)
    return members


def _check_targets(where, bundle, first_name, first) -> None:
    """Members must predict the same things: their attributes (in the same ranges) are averaged."""
    mine, theirs = bundle.config.model, first.config.model
    if (mine.targets, mine.attribute_ranges) != (theirs.targets, theirs.attribute_ranges):
        raise ModelDirError(f"{where}: predicts {', '.join(mine.targets)} with ranges {mine.attribute_ranges}, "
                            f"{first_name} {', '.join(theirs.targets)} with {theirs.attribute_ranges}: an ensemble's "
                            "members must predict the same targets")


def mean_attributes(members: Sequence[Member], member_attributes: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """An ensemble's attributes: the members' predictions averaged, in the attributes' own scales."""
    if not member_attributes or member_attributes[0] is None:
        return None
    attributes = attributes_of(members[0].bundle.config.model)
    return np.mean([unscaled(attributes, values) for values in member_attributes], axis=0)


def combine(rules: Sequence[DecisionRule], member_probs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each member decides with its own rule, then hard voting.

    Returns (predictions (N,), probabilities (N, K) = mean of the members' decision probabilities,
    member votes (M, N)). A single member's prediction is its own decision.
    """
    probs = [rule.probabilities(p) for rule, p in zip(rules, member_probs)]
    votes = np.stack([apply_thresholds(p, rule.thresholds) for rule, p in zip(rules, probs)])  # = rule.decide(raw)
    num_classes = probs[0].shape[1]
    preds = votes[0] if len(votes) == 1 else hard_vote(votes, num_classes)
    return preds, np.mean(probs, axis=0), votes
