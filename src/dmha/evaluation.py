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
from .ensemble import Member, combine, is_ensemble, load_members, mean_attributes
from .extraction import featurize
from .layout import FeatureRef
from .metrics import attributes_report, classification_report, plot_attribute, plot_confusion, write_confusion_csv
from .model import DMHA
from .modeldir import write_thresholds
from .outputs import write_errors
from .speaker_norm import with_speaker_moments
from .targets import Attribute, attribute_values, attributes_of, predicts_category, unscaled

log = logging.getLogger(__name__)


def head_outputs(model: DMHA, refs: Sequence[FeatureRef], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K) class probabilities and (N, A) attributes in [0, 1] (None without attribute outputs) of the
    head on cached features, full length (no crops)."""
    model.eval()
    loader = feature_loader(refs, batch_size=batch_size)
    outputs = [model.predict_all(batch)[:2] for batch in loader]
    n_attributes = len(model.attribute_names)
    if not outputs:
        return np.zeros((0, model.classifier.output.out_features)), np.zeros((0, n_attributes)) if n_attributes else None
    order = loader.batch_sampler.order()
    probs = np.stack(in_input_order(list(torch.cat([p for p, _ in outputs]).numpy()), order))
    if not n_attributes:
        return probs, None
    return probs, np.stack(in_input_order(list(torch.cat([a for _, a in outputs]).numpy()), order))


def head_probabilities(model: DMHA, refs: Sequence[FeatureRef], batch_size: int = 32) -> np.ndarray:
    """(N, K) class probabilities of the head on cached features, full length (no crops)."""
    return head_outputs(model, refs, batch_size)[0]


@dataclass
class AttributeScores:
    """Predicted and reference attribute values (N, A), both in the attributes' own scales."""

    attributes: list[Attribute]
    pred: np.ndarray
    ref: np.ndarray


def score_split(model: DMHA, refs: Sequence[FeatureRef], targets: Sequence[int], labels: Sequence[str],
                out: Path | None = None, names: Sequence[str] | None = None, config=None,
                items: Sequence[Item] | None = None) -> dict:
    """Metrics of the head on cached features: macro-F1 etc. of its argmax when it predicts categories,
    CCC, r and RMSE per attribute when it predicts attributes (references from `items`' columns, read as
    `config.model` declares them); with `out`, also confusion CSV/PNG, scatter plots and predictions."""
    probs, scaled = head_outputs(model, refs)
    preds = probs.argmax(axis=1)
    category = config is None or predicts_category(config.model)
    report = classification_report(list(targets), preds.tolist(), labels) if category else {"n": len(refs)}
    scores = None
    if scaled is not None and items is not None:
        attributes = attributes_of(config.model)
        reference = attribute_values(items, attributes, "the manifest")
        scores = AttributeScores(attributes, unscaled(attributes, scaled), unscaled(attributes, reference))
        report.update(attributes_report([a.name for a in attributes], scores.pred, scores.ref))
    if out is not None:
        write_outputs(out, report, names or [r.speech_key for r in refs], targets, preds, probs, labels,
                      attributes=scores)
    return report


def write_outputs(out: Path, report: dict, names, targets, preds, probs, labels, votes=None, voters=(),
                  attributes: AttributeScores | None = None) -> None:
    """confusion.csv/png (a category model), a scatter plot per attribute (an attribute model) and
    predictions.csv (with each member's vote for an ensemble, and each attribute's prediction and reference)."""
    out.mkdir(parents=True, exist_ok=True)
    category = "confusion" in report
    if category:
        cm = np.asarray(report["confusion"])
        write_confusion_csv(cm, labels, out / "confusion.csv")
        plot_confusion(cm, labels, out / "confusion.png", f"macro-F1 {report['macro_f1']:.3f}, n={report['n']}")
    attribute_names = [a.name for a in attributes.attributes] if attributes is not None else []
    if attributes is not None:
        for k, attribute in enumerate(attributes.attributes):
            plot_attribute(attributes.pred[:, k], attributes.ref[:, k], attribute.name, (attribute.low, attribute.high),
                           out / f"scatter_{attribute.name}.png")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        category_columns = ["prediction", *[f"p_{label}" for label in labels], *[f"vote_{name}" for name in voters]]
        writer.writerow(["path", "label", *(category_columns if category else []),
                         *[c for name in attribute_names for c in (name, f"ref_{name}")]])
        for i, (name, target, row) in enumerate(zip(names, targets, probs)):
            member_votes = [labels[int(v)] for v in votes[:, i]] if votes is not None else []
            cells = [labels[int(preds[i])], *[f"{p:.6f}" for p in row], *member_votes] if category else []
            values = [c for k in range(len(attribute_names)) for c in
                      (f"{attributes.pred[i, k]:.4f}", "" if np.isnan(attributes.ref[i, k]) else f"{attributes.ref[i, k]:g}")]
            writer.writerow([name, labels[target], *cells, *values])


@dataclass
class Scored:
    """Every member's head probabilities on the same items (features computed once per encoder set)."""

    items: list[Item]
    member_probs: list[np.ndarray]
    member_refs: list[list[FeatureRef]]
    errors: list[tuple[str, str]]
    member_attributes: list[np.ndarray | None] | None = None  # (N, A) in [0, 1] per member, None without


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
    member_probs, member_refs, member_attributes, with_speakers = [], [], [], {}
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
        probs, attributes = head_outputs(member.bundle.model, refs)
        member_probs.append(probs)
        member_attributes.append(attributes)
    return Scored(kept, member_probs, member_refs, list(errors.items()), member_attributes)


def _feature_key(member: Member) -> str:
    """Members with equal keys see identical frozen features (same encoders, settings and waveform norm);
    how many top layers a head recomputes live, and where the encoders ran, do not change them."""
    cfg = to_dict(member.bundle.config)
    frozen = {k: v for k, v in cfg["encoders"].items() if k not in ("finetune_layers", "device")}
    return json.dumps([frozen, cfg["features"], vars(member.bundle.norm)], sort_keys=True)


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

    model_config = members[0].bundle.config.model
    category = predicts_category(model_config)
    preds, probs, votes = combine([m.rule for m in members], scored.member_probs)
    result = classification_report(targets, preds.tolist(), labels) if category else {"n": len(scored.items)}
    scores = None
    predicted = mean_attributes(members, scored.member_attributes)
    if predicted is not None:
        attributes = attributes_of(model_config)
        reference = unscaled(attributes, attribute_values(scored.items, attributes, manifest))
        scores = AttributeScores(attributes, predicted, reference)
        result.update(attributes_report([a.name for a in attributes], predicted, reference))
    write_outputs(out, result, [str(i.path) for i in scored.items], targets, preds, probs, labels,
                  votes if len(members) > 1 else None, [m.name for m in members] if len(members) > 1 else (), scores)
    result.update({"split": split, "model": str(model_dir), "ensemble": is_ensemble(model_dir),
                   "skipped": [{"path": p, "reason": r} for p, r in scored.errors]})
    if category:
        decisions = {name: classification_report(targets, combine(rules, scored.member_probs)[0].tolist(), labels)["macro_f1"]
                     for name, rules in decision_variants(members, prior).items()}
        result.update({
            "decision": {"prior": members[0].bundle.prior_in_effect(prior),
                         "thresholds": use_thresholds and any(m.bundle.thresholds is not None for m in members)},
            "decisions_macro_f1": decisions})
    if len(members) == 1:  # what training recorded, so `compare` can show it beside the test score
        result.update({key: value for key, value in members[0].bundle.meta.items()
                       if key.startswith("dev_") or key == "best_epoch"})
    else:
        result["members"] = {m.name: {key: value for key, value in m.bundle.meta.items() if key.startswith("dev_")}
                             for m in members}
        for (name, member), member_votes in zip(result["members"].items(), votes):
            if category:
                member["macro_f1"] = classification_report(targets, member_votes.tolist(), labels)["macro_f1"]
            member.setdefault("dev_macro_f1", None)
    (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if report:
        from .report import write_report

        write_report(out / "report.html", result, members, scored, targets, preds, attributes=scores)
    return result


def tune_model_thresholds(model_dir: str | Path, manifest: str | Path, split: str = "train",
                          objective: str = "ovr", prior: str | None = None, progress: bool = True) -> dict:
    """Search per-class thresholds on `split` and write thresholds.json into the model directory
    (into every member's directory for an ensemble). Returns {member: summary}."""
    members = load_members(model_dir, use_thresholds=False, prior=prior, encoder_device=None)
    if not predicts_category(members[0].bundle.config.model):
        raise ManifestError(f"{model_dir}: predicts attributes only ({', '.join(members[0].bundle.config.model.targets)}); "
                            "there are no class thresholds to tune")
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
