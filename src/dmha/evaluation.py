"""`dmha evaluate` and `dmha tune-thresholds`: a model or ensemble scored on one split of a manifest."""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .batches import feature_loader, in_input_order
from .config import to_dict
from .corpora import Corpora, LabelScope, corpus_of, label_scope, read_corpora
from .data.manifest import Item, ManifestError, labels_of, require_splits
from .decision import DecisionRule, apply_thresholds, restrict, tune_thresholds
from .ensemble import Member, combine, is_ensemble, load_members, mean_attributes
from .extraction import features_for
from .figures import SCORING
from .layout import FeatureRef
from .metrics import (attributes_report, brier_score, classification_report, expected_calibration_error, plot_attribute,
                      plot_confusion, reliability, write_confusion_csv)
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


def head_logits(model: DMHA, refs: Sequence[FeatureRef], batch_size: int = 32) -> np.ndarray:
    """(N, K) raw logits of the head on cached features, full length, before any temperature."""
    model.eval()
    loader = feature_loader(refs, batch_size=batch_size)
    rows = [row for batch in loader for row in model.logits(batch).numpy()]
    return np.stack(in_input_order(rows, loader.batch_sampler.order())) if rows else np.zeros((0, model.dims.num_classes))


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
                items: Sequence[Item] | None = None, corpora: Corpora | None = None) -> dict:
    """Metrics of the head on cached features: macro-F1 etc. of its argmax when it predicts categories,
    CCC, r and RMSE per attribute when it predicts attributes (references from `items`' columns, read as
    `config.model` declares them); with several corpora, `per_corpus` figures (each on its own labels);
    with `out`, also confusion CSV/PNG, scatter plots and predictions."""
    probs, scaled = head_outputs(model, refs)
    preds = probs.argmax(axis=1)
    category = config is None or predicts_category(config.model)
    report = classification_report(list(targets), preds.tolist(), labels) if category else {"n": len(refs)}
    if category:
        report.update(calibration_scores(probs, targets))
    if category and corpora is not None and corpora.several and items is not None:
        report["per_corpus"] = corpus_reports(probs, targets, labels, items, corpora)
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


def calibration_scores(probs: np.ndarray, targets: Sequence[int]) -> dict:
    """How well the probabilities are calibrated: expected calibration error (15 bins) and Brier score."""
    return {"ece": expected_calibration_error(probs, targets), "brier": brier_score(probs, targets)}


def _item_corpora(items: Sequence[Item]) -> Corpora:
    """What each corpus among the items offers (their labels), for per-corpus figures."""
    offered: dict[str, set[str]] = {}
    for item in items:
        if corpus_of(item):
            offered.setdefault(corpus_of(item), set()).add(item.label)
    return Corpora({c: sorted(v) for c, v in offered.items()}) if len(offered) > 1 else Corpora()


def corpus_reports(probs: np.ndarray, targets: Sequence[int], labels: Sequence[str], items: Sequence[Item],
                   corpora: Corpora) -> dict[str, dict]:
    """Each corpus's figures on its own labels: its clips only, the prediction the most probable of the
    labels that corpus offered (as a user of that corpus would ask: `predict --labels`), and the
    calibration of those renormalised probabilities."""
    out = {}
    targets = np.asarray(targets)
    for corpus in sorted({corpus_of(i) for i in items} - {None}):
        rows = np.array([k for k, i in enumerate(items) if corpus_of(i) == corpus])
        offered = corpora.offered(items[rows[0]], labels) or [True] * len(labels)
        own = [label for label, on in zip(labels, offered) if on]
        index = {label: k for k, label in enumerate(own)}
        own_probs = restrict(probs[rows], offered)[:, offered]  # (N_corpus, K_own)
        own_targets = [index[labels[t]] for t in targets[rows]]
        report = classification_report(own_targets, own_probs.argmax(axis=1).tolist(), own)
        out[corpus] = {**{k: v for k, v in report.items() if k != "confusion"}, **calibration_scores(own_probs, own_targets)}
    return out


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
    """Every member's head probabilities on the same items (features computed once per encoder set),
    each clip alone; for members that normalise per speaker, also grouped by the manifest's speakers."""

    items: list[Item]
    member_probs: list[np.ndarray]
    member_refs: list[list[FeatureRef]]
    errors: list[tuple[str, str]]
    member_attributes: list[np.ndarray | None] | None = None  # (N, A) in [0, 1] per member, None without
    grouped_probs: list[np.ndarray] | None = None  # None when no member uses speaker statistics
    grouped_attributes: list[np.ndarray | None] | None = None


def score_members(members: Sequence[Member], items: Sequence[Item], progress: bool = True) -> Scored:
    """Featurize once per distinct (encoders, features, waveform norm), then run each member's head on
    each clip alone and, where a member normalises per speaker, grouped by the items' speakers.

    Members that share encoders and training data share features, so each encoder runs once per
    utterance. An item that fails for any member is skipped for all, so every member votes on it.
    """
    groups: dict[str, object] = {}
    for member in members:
        cfg, key = member.bundle.config, _feature_key(member)
        if key not in groups:
            groups[key] = features_for(items, cfg, norm=member.bundle.norm, progress=progress)
    errors = {path: reason for data in groups.values() for path, reason in data.errors}
    kept = [item for item in items if str(item.path) not in errors]
    alone, grouped, with_speakers = [], [], {}
    for member in members:
        key = _feature_key(member)
        data = groups[key]
        ref_of = {str(item.path): ref for item, ref in zip(data.items, data.refs)}
        refs = [ref_of[str(item.path)] for item in kept]
        alone.append((refs, head_outputs(member.bundle.model, refs)))
        if member.bundle.config.model.feature_norm == "speaker" and any(item.speaker for item in kept):
            if key not in with_speakers:  # the manifest's speakers, computed once per feature set
                with_speakers[key] = dict(zip((str(i.path) for i in data.items),
                                              with_speaker_moments(data.items, data.refs, progress)))
            refs = [with_speakers[key][str(item.path)] for item in kept]
            grouped.append(head_outputs(member.bundle.model, refs))
        else:
            grouped.append(alone[-1][1])
    scored = Scored(kept, [p for _, (p, _) in alone], [r for r, _ in alone], list(errors.items()),
                    [a for _, (_, a) in alone])
    if with_speakers:
        scored.grouped_probs, scored.grouped_attributes = [p for p, _ in grouped], [a for _, a in grouped]
    return scored


def _feature_key(member: Member) -> str:
    """Members with equal keys see identical frozen features (same encoders, settings and waveform norm);
    how many top layers a head recomputes live, and where the encoders ran, do not change them."""
    cfg = to_dict(member.bundle.config)
    frozen = {k: v for k, v in cfg["encoders"].items() if k not in ("finetune_layers", "device")}
    return json.dumps([frozen, cfg["features"], vars(member.bundle.norm)], sort_keys=True)


def _targets(items: Sequence[Item], labels: Sequence[str], scope: LabelScope | None = None) -> list[int]:
    """Each item's label as its class index in the model's label order."""
    index = scope.index if scope is not None else {label: k for k, label in enumerate(labels)}
    return [index[item.label] for item in items]


def _split_items(members: Sequence[Member], manifest, split: str, requested: Sequence[str] | None = None,
                 strict: bool = False) -> tuple[list[Item], LabelScope]:
    """The split's items the model can be scored on, and how their labels map onto the model's: the
    labels both know (by canonical name), or `requested`; with `strict`, a label the model does not know
    is an error (thresholds are tuned on the model's own labels only)."""
    labels = members[0].bundle.labels
    manifests = [manifest] if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    items, _ = read_corpora(manifests)
    name = " + ".join(map(str, manifests))
    require_splits(items, [split], name)
    unknown = sorted({i.label for i in items if i.split == split} - set(labels))
    if strict and unknown:
        raise ManifestError(f"{name}: label(s) {', '.join(unknown)} are not known to the model "
                            f"(model labels: {', '.join(labels)})")
    scope = label_scope(labels, labels_of([i for i in items if i.split in ("train", "dev", "test", split)]), requested)
    return [i for i in items if i.split == split and i.label in scope.index], scope


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


def evaluate(model_dir: str | Path, manifest: str | Path | Sequence[str | Path], split: str = "test",
             out: str | Path = "eval", progress: bool = True, use_thresholds: bool = True, prior: str | None = None,
             report: bool = True, labels: Sequence[str] | None = None) -> dict:
    """Score MODEL_DIR (a model or an ensemble) on `split`, each clip alone (what `predict` gives a file).

    `manifest` may be several (figures per corpus as well). The model is scored on the labels it and the
    manifest share (by canonical name: `fearful` is `fear`), or on `labels`: items with other labels are
    left out, the model's other labels are not predicted, and `notes` in metrics.json say so (a corpus
    the model never saw).

    Writes metrics.json (the decision in effect at the top level, plus macro-F1 of every decision
    variant and, for ensembles, of every member; for a model that normalises per speaker, `grouped`:
    the same scored with the manifest's speakers), confusion.csv/png, predictions.csv (grouped/ beside
    them), errors.tsv and report.html.
    """
    out = Path(out)
    members = load_members(model_dir, use_thresholds=use_thresholds, prior=prior, encoder_device=None)  # where trained, if here
    items, scope = _split_items(members, manifest, split, requested=labels)
    labels = members[0].bundle.labels  # from here on: the model's labels
    scored = score_members(members, items, progress)
    if scope.restricted:  # the prediction is the most probable of the labels scored
        scored.member_probs = [restrict(p, scope.allowed) for p in scored.member_probs]
        if scored.grouped_probs is not None:
            scored.grouped_probs = [restrict(p, scope.allowed) for p in scored.grouped_probs]
    out.mkdir(parents=True, exist_ok=True)
    write_errors(scored.errors, out / "errors.tsv")
    result, preds, scores = _scored_report(members, scored, scored.member_probs, scored.member_attributes, manifest,
                                           out, prior, scope)
    result.update({"split": split, "model": str(model_dir), "ensemble": is_ensemble(model_dir), "scoring": SCORING,
                   "skipped": [{"path": p, "reason": r} for p, r in scored.errors]})
    if scope.notes:
        result.update({"notes": scope.notes, "labels_scored": [l for l, on in zip(labels, scope.allowed) if on]})
    if scored.grouped_probs is not None:
        grouped, _, _ = _scored_report(members, scored, scored.grouped_probs, scored.grouped_attributes, manifest,
                                       out / "grouped", prior, scope)
        result["grouped"] = {k: v for k, v in grouped.items() if k not in ("confusion", "members", "reliability")}
    if len(members) == 1:  # what training recorded, so `compare` can show it beside the test score
        result.update({key: value for key, value in members[0].bundle.meta.items()
                       if key.startswith("dev_") or key == "best_epoch"})
    (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if report:
        from .report import write_report

        write_report(out / "report.html", result, members, scored, _targets(scored.items, labels, scope), preds,
                     attributes=scores)
    return result


def _scored_report(members: Sequence[Member], scored: Scored, member_probs, member_attributes, manifest, out: Path,
                   prior: str | None, scope: LabelScope) -> tuple[dict, np.ndarray, AttributeScores | None]:
    """The report of one way of scoring the items (alone or grouped): categories with every decision
    variant and each ensemble member, attributes, each corpus on its own labels when the items come from
    several; written to `out` (confusion, predictions)."""
    labels = members[0].bundle.labels
    targets = _targets(scored.items, labels, scope)
    category = predicts_category(members[0].bundle.config.model)
    preds, probs, votes = combine([m.rule for m in members], member_probs)
    result = classification_report(targets, preds.tolist(), labels) if category else {"n": len(scored.items)}
    if category:
        result.update(calibration_scores(probs, targets), reliability=reliability(probs, targets))
    corpora = _item_corpora(scored.items)
    if category and corpora.several:
        result["per_corpus"] = corpus_reports(np.mean(member_probs, axis=0), targets, labels, scored.items, corpora)
    scores = None
    predicted = mean_attributes(members, member_attributes)
    if predicted is not None:
        attributes = attributes_of(members[0].bundle.config.model)
        reference = unscaled(attributes, attribute_values(scored.items, attributes, manifest))
        scores = AttributeScores(attributes, predicted, reference)
        result.update(attributes_report([a.name for a in attributes], predicted, reference))
    write_outputs(out, result, [str(i.path) for i in scored.items], targets, preds, probs, labels,
                  votes if len(members) > 1 else None, [m.name for m in members] if len(members) > 1 else (), scores)
    if category:
        decisions = {name: classification_report(targets, combine(rules, member_probs)[0].tolist(), labels)["macro_f1"]
                     for name, rules in decision_variants(members, prior).items()}
        result.update({
            "decision": {"prior": members[0].bundle.prior_in_effect(prior),
                         "thresholds": any(m.rule.thresholds is not None for m in members)},
            "decisions_macro_f1": decisions})
    if len(members) > 1:
        result["members"] = {m.name: {key: value for key, value in m.bundle.meta.items() if key.startswith("dev_")}
                             for m in members}
        for (name, member), member_votes in zip(result["members"].items(), votes):
            if category:
                member["macro_f1"] = classification_report(targets, member_votes.tolist(), labels)["macro_f1"]
            member.setdefault("dev_macro_f1", None)
    return result, preds, scores


def tune_model_thresholds(model_dir: str | Path, manifest: str | Path, split: str = "train",
                          objective: str = "ovr", prior: str | None = None, progress: bool = True) -> dict:
    """Search per-class thresholds on `split` and write thresholds.json into the model directory
    (into every member's directory for an ensemble). Returns {member: summary}."""
    members = load_members(model_dir, use_thresholds=False, prior=prior, encoder_device=None)
    if not predicts_category(members[0].bundle.config.model):
        raise ManifestError(f"{model_dir}: predicts attributes only ({', '.join(members[0].bundle.config.model.targets)}); "
                            "there are no class thresholds to tune")
    labels = members[0].bundle.labels
    scored = score_members(members, _split_items(members, manifest, split, strict=True)[0], progress)
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
