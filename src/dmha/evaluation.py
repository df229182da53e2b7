"""`dmha evaluate` and `dmha tune-thresholds`: a model or ensemble scored on one split of a manifest."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .batches import feature_loader, in_input_order
from .config import to_dict
from .data.manifest import Item, ManifestError, read_manifest, require_splits
from .decision import DecisionRule, apply_thresholds, tune_thresholds
from .ensemble import Member, combine, is_ensemble, load_members
from .extraction import featurize
from .layout import FeatureRef
from .metrics import classification_report, plot_confusion, write_confusion_csv
from .model import DMHA
from .modeldir import write_thresholds
from .outputs import write_errors
from .speaker_norm import with_speaker_moments

log = logging.getLogger(__name__)


def head_probabilities(model: DMHA, refs: Sequence[FeatureRef], batch_size: int = 32) -> np.ndarray:
    """(N, K) class probabilities of the head on cached features, full length (no crops)."""
    model.eval()
    loader = feature_loader(refs, batch_size=batch_size)
    probs = [model.predict_proba(batch)[0] for batch in loader]
    if not probs:
        return np.zeros((0, model.classifier.output.out_features))
    return np.stack(in_input_order(list(torch.cat(probs).numpy()), loader.batch_sampler.order()))


def score_split(model: DMHA, refs: Sequence[FeatureRef], targets: Sequence[int], labels: Sequence[str],
                out: Path | None = None, names: Sequence[str] | None = None) -> dict:
    """Metrics of the head's argmax on cached features; with `out`, also confusion CSV/PNG and predictions."""
    probs = head_probabilities(model, refs)
    preds = probs.argmax(axis=1)
    report = classification_report(list(targets), preds.tolist(), labels)
    if out is not None:
        write_outputs(out, report, names or [r.speech_key for r in refs], targets, preds, probs, labels)
    return report


def write_outputs(out: Path, report: dict, names, targets, preds, probs, labels, votes=None, voters=()) -> None:
    """confusion.csv/png and predictions.csv (with each member's vote for an ensemble)."""
    out.mkdir(parents=True, exist_ok=True)
    cm = np.asarray(report["confusion"])
    write_confusion_csv(cm, labels, out / "confusion.csv")
    plot_confusion(cm, labels, out / "confusion.png", f"macro-F1 {report['macro_f1']:.3f}, n={report['n']}")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "prediction", *[f"p_{label}" for label in labels],
                         *[f"vote_{name}" for name in voters]])
        for i, (name, target, row) in enumerate(zip(names, targets, probs)):
            member_votes = [labels[int(v)] for v in votes[:, i]] if votes is not None else []
            writer.writerow([name, labels[target], labels[int(preds[i])], *[f"{p:.6f}" for p in row], *member_votes])


@dataclass
class Scored:
    """Every member's head probabilities on the same items (features computed once per encoder set)."""

    items: list[Item]
    member_probs: list[np.ndarray]
    member_refs: list[list[FeatureRef]]
    errors: list[tuple[str, str]]


def score_members(members: Sequence[Member], items: Sequence[Item], progress: bool = True) -> Scored:
    """Featurize once per distinct (encoders, features, waveform norm), then run each member's head.

    Members that share encoders and training data share features, so each encoder runs once per
    utterance. An item that fails for any member is skipped for all, so every member votes on it.
    """
    groups: dict[str, object] = {}
    for member in members:
        cfg, key = member.bundle.config, _feature_key(member)
        if key not in groups:
            groups[key] = featurize(items, cfg.encoders, cfg.features, member.bundle.norm, progress)
    errors = {path: reason for data in groups.values() for path, reason in data.errors}
    kept = [item for item in items if str(item.path) not in errors]
    member_probs, member_refs, with_speakers = [], [], {}
    for member in members:
        key = _feature_key(member)
        data, refs = groups[key], groups[key].refs
        if member.bundle.config.model.feature_norm == "speaker":  # the manifest's speakers, computed once
            if key not in with_speakers:
                with_speakers[key] = with_speaker_moments(data.items, data.refs, progress)
            refs = with_speakers[key]
        ref_of = {str(item.path): ref for item, ref in zip(data.items, refs)}
        refs = [ref_of[str(item.path)] for item in kept]
        member_refs.append(refs)
        member_probs.append(head_probabilities(member.bundle.model, refs))
    return Scored(kept, member_probs, member_refs, list(errors.items()))


def _feature_key(member: Member) -> str:
    """Members with equal keys see identical features (same encoders, settings and waveform norm)."""
    cfg = to_dict(member.bundle.config)
    return json.dumps([cfg["encoders"], cfg["features"], vars(member.bundle.norm)], sort_keys=True)


def _targets(items: Sequence[Item], labels: Sequence[str]) -> list[int]:
    """Each item's label as its class index in the model's label order."""
    index = {label: k for k, label in enumerate(labels)}
    return [index[item.label] for item in items]


def _split_items(members: Sequence[Member], manifest, split: str) -> list[Item]:
    labels = members[0].bundle.labels
    items = read_manifest(manifest)
    require_splits(items, [split], manifest)
    items = [i for i in items if i.split == split]
    unknown = sorted({i.label for i in items} - set(labels))
    if unknown:
        raise ManifestError(f"{manifest}: label(s) {', '.join(unknown)} are not known to the model "
                            f"(model labels: {', '.join(labels)})")
    return items


def decision_variants(members: Sequence[Member], prior: str | None) -> dict[str, list[DecisionRule]]:
    """Every combination of prior correction (off/on) and thresholds (off/on, when tuned) to report."""
    configured = members[0].bundle.prior_in_effect(prior)
    target = configured if configured != "none" else "uniform"
    have_thresholds = any(m.bundle.thresholds is not None for m in members)
    variants = {}
    for use_prior in (False, True):
        for use_thr in (False, True) if have_thresholds else (False,):
            name = "+".join(([f"prior={target}"] if use_prior else []) + (["thresholds"] if use_thr else [])) or "argmax"
            variants[name] = [m.bundle.decision_rule(use_thr, target if use_prior else "none", warn=False)
                              for m in members]
    return variants


def evaluate(model_dir: str | Path, manifest: str | Path, split: str = "test", out: str | Path = "eval",
             progress: bool = True, use_thresholds: bool = True, prior: str | None = None,
             report: bool = True) -> dict:
    """Score MODEL_DIR (a model or an ensemble) on `split`.

    Writes metrics.json (the decision in effect at the top level, plus macro-F1 of every decision
    variant and, for ensembles, of every member), confusion.csv/png, predictions.csv, errors.tsv
    and report.html.
    """
    out = Path(out)
    members = load_members(model_dir, use_thresholds=use_thresholds, prior=prior, encoder_device=None)  # where trained, if here
    labels = members[0].bundle.labels
    scored = score_members(members, _split_items(members, manifest, split), progress)
    out.mkdir(parents=True, exist_ok=True)
    write_errors(scored.errors, out / "errors.tsv")
    targets = _targets(scored.items, labels)

    preds, probs, votes = combine([m.rule for m in members], scored.member_probs)
    result = classification_report(targets, preds.tolist(), labels)
    write_outputs(out, result, [str(i.path) for i in scored.items], targets, preds, probs, labels,
                  votes if len(members) > 1 else None, [m.name for m in members] if len(members) > 1 else ())
    decisions = {name: classification_report(targets, combine(rules, scored.member_probs)[0].tolist(), labels)["macro_f1"]
                 for name, rules in decision_variants(members, prior).items()}
    result.update({
        "split": split, "model": str(model_dir), "ensemble": is_ensemble(model_dir),
        "decision": {"prior": members[0].bundle.prior_in_effect(prior),
                     "thresholds": use_thresholds and any(m.bundle.thresholds is not None for m in members)},
        "decisions_macro_f1": decisions,
        "skipped": [{"path": p, "reason": r} for p, r in scored.errors],
    })
    if len(members) == 1:  # what training recorded, so `compare` can show it beside the test score
        result.update({key: members[0].bundle.meta[key] for key in ("dev_macro_f1", "best_epoch")
                       if key in members[0].bundle.meta})
    else:
        result["members"] = {
            m.name: {"macro_f1": classification_report(targets, member_votes.tolist(), labels)["macro_f1"],
                     "dev_macro_f1": m.bundle.meta.get("dev_macro_f1")}
            for m, member_votes in zip(members, votes)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if report:
        from .report import write_report

        write_report(out / "report.html", result, members, scored, targets, preds)
    return result


def tune_model_thresholds(model_dir: str | Path, manifest: str | Path, split: str = "train",
                          objective: str = "ovr", prior: str | None = None, progress: bool = True) -> dict:
    """Search per-class thresholds on `split` and write thresholds.json into the model directory
    (into every member's directory for an ensemble). Returns {member: summary}."""
    members = load_members(model_dir, use_thresholds=False, prior=prior, encoder_device=None)
    labels = members[0].bundle.labels
    scored = score_members(members, _split_items(members, manifest, split), progress)
    if not scored.items:
        raise ManifestError(f"{manifest}: no usable {split} items to tune thresholds on")
    targets = np.array(_targets(scored.items, labels))
    summary = {}
    for member, raw in zip(members, scored.member_probs):
        probs = member.rule.probabilities(raw)
        thresholds = tune_thresholds(probs, targets, objective)
        before = classification_report(targets, probs.argmax(1), labels)["macro_f1"]
        after = classification_report(targets, apply_thresholds(probs, thresholds), labels)["macro_f1"]
        payload = {
            "thresholds": {label: float(t) for label, t in zip(labels, thresholds)},
            "split": split, "objective": objective, "n": len(targets),
            "prior": member.bundle.prior_in_effect(prior),
            "macro_f1_before": before, "macro_f1_after": after,
        }
        write_thresholds(member.bundle.directory, payload)
        summary[member.name] = payload
    return summary
