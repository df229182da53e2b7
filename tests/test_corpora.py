"""Several corpora in one training: one label vocabulary, each clip's loss over its own corpus's labels,
speakers told apart by corpus, per-corpus figures, folds within each corpus, cross-corpus evaluation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import write_tone_corpus
from dmha.config import load
from dmha.corpora import canonical, label_scope, read_corpora
from dmha.decision import DecisionRule, restrict
from dmha.cv import cross_validate
from dmha.data.manifest import ManifestError
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.losses import FocalLoss, WeightedCrossEntropy
from dmha.speaker_norm import speaker_group


def _corpus(root, labels):
    """A tone corpus whose k-th label sounds like the k-th label of the other corpus (same tones), and
    whose speakers are named s0..s5 like the other's."""
    return write_tone_corpus(root, n_per_class=6, labels=labels)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    a = _corpus(root / "acted", ("neutral", "fearful", "calm"))
    b = _corpus(root / "crowd", ("neutral", "fear", "angry"))
    (root / "acted.csv").write_text(a.read_text())
    (root / "crowd.csv").write_text(b.read_text())
    # the manifests sit beside their corpora under the corpus names, paths pointing into each folder
    for name in ("acted", "crowd"):
        rows = (root / f"{name}.csv").read_text().splitlines()
        (root / f"{name}.csv").write_text("\n".join([rows[0]] + [f"{name}/{r}" for r in rows[1:]]) + "\n")
    return root, root / "acted.csv", root / "crowd.csv"


def _sets(tiny_encoders, root, *extra):
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={root / 'cache'}", "train.max_epochs=3", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0", *extra]


def test_several_manifests_share_one_vocabulary_and_keep_their_own_names(two):
    _, a, b = two
    items, corpora = read_corpora([a, b])
    assert corpora.several and corpora.labels == {"acted": ["calm", "fear", "neutral"],
                                                 "crowd": ["angry", "fear", "neutral"]}
    assert corpora.names["acted"]["fearful"] == "fear"
    fearful = [i for i in items if i.extra.get("corpus_label") == "fearful"]
    assert fearful and all(i.label == "fear" and i.extra["corpus"] == "acted" for i in fearful)
    single, none = read_corpora([a])
    assert not none.several and {i.label for i in single} == {"neutral", "fearful", "calm"}  # one corpus: as is
    assert canonical("Surprised") == "surprise" and canonical("neutral") == "neutral"
    with pytest.raises(ManifestError, match="listed by more than one manifest"):
        read_corpora([a, a])


def test_speakers_of_two_corpora_never_share_statistics(two):
    items, _ = read_corpora(two[1:])
    a = next(i for i in items if i.extra["corpus"] == "acted" and i.speaker == "s0")
    b = next(i for i in items if i.extra["corpus"] == "crowd" and i.speaker == "s0")
    assert a.split == b.split and speaker_group(a) != speaker_group(b)


def test_the_loss_covers_only_the_labels_a_corpus_offered():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, 1, 0])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5])
    everything = torch.ones(6, 4, dtype=torch.bool)
    for smoothing in (0.0, 0.1):  # with every class allowed: torch's weighted, label-smoothed CE
        loss = WeightedCrossEntropy(weight, smoothing)
        assert torch.allclose(loss(logits, target, everything), torch.nn.functional.cross_entropy(
            logits, target, weight=weight, label_smoothing=smoothing), atol=1e-6)
    allowed = everything.clone()
    allowed[:3, 3] = False  # the first three items' corpus never offered class 3
    for loss in (WeightedCrossEntropy(weight, 0.1), FocalLoss(2.0, 0.1)):
        logits.grad = None
        loss(logits, target.clamp(max=2) if loss.__class__ is FocalLoss else torch.tensor([0, 1, 2, 3, 1, 0]),
             allowed).backward()
        assert torch.all(logits.grad[:3, 3] == 0)  # no push on a class the item's corpus never offered
        assert torch.all(logits.grad[3:, 3] != 0)
        assert torch.isfinite(logits.grad).all()


def test_restricting_predictions_renormalises_over_the_subset():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert np.allclose(restrict(probs, [True, True, False]), [[0.625, 0.375, 0.0], [0.5, 0.5, 0.0]])


def test_label_scope_of_a_corpus_the_model_never_saw():
    scope = label_scope(["calm", "fearful", "neutral"], ["angry", "fear", "neutral"])
    assert scope.allowed == [False, True, True] and scope.index == {"fear": 1, "neutral": 2}
    assert any("angry" in n and "left out" in n for n in scope.notes)
    assert any("calm" in n and "not predicted" in n for n in scope.notes)
    asked = label_scope(["calm", "fearful", "neutral"], ["angry", "fear", "neutral"], ["neutral"])
    assert asked.allowed == [False, False, True] and asked.index == {"neutral": 2}
    with pytest.raises(ManifestError, match="not labels of the model"):
        label_scope(["calm", "neutral"], ["neutral"], ["happy"])
    same = label_scope(["calm", "neutral"], ["calm", "neutral"])
    assert not same.restricted and not same.notes


@pytest.fixture(scope="module")
def joint(two, tiny_encoders):
    root, a, b = two
    metrics = train([a, b], root / "joint", load(None, _sets(tiny_encoders, root)), progress=False)
    return root, metrics


def test_joint_training_stores_the_corpora_and_reports_each(joint):
    root, metrics = joint
    labels = json.loads((root / "joint" / "model" / "labels.json").read_text())
    assert labels == ["angry", "calm", "fear", "neutral"]
    config = json.loads((root / "joint" / "model" / "config.json").read_text())
    assert config["meta"]["corpora"]["labels"]["acted"] == ["calm", "fear", "neutral"]
    per = metrics["per_corpus"]
    assert set(per) == {"acted", "crowd"} and per["acted"]["labels"] == ["calm", "fear", "neutral"]
    assert per["acted"]["n"] + per["crowd"]["n"] == metrics["n"]
    for split in ("test", "test_grouped", "dev"):
        assert set(metrics[split]["per_corpus"]) == {"acted", "crowd"}
    # each corpus's figure is its clips' macro-F1 with the prediction the most probable of its own labels
    rows = list(csv.DictReader(open(root / "joint" / "eval_test" / "predictions.csv")))
    from sklearn.metrics import f1_score

    for corpus, own in (("acted", ["calm", "fear", "neutral"]), ("crowd", ["angry", "fear", "neutral"])):
        mine = [r for r in rows if f"/{corpus}/" in r["path"]]
        predicted = [max(own, key=lambda label: float(r[f"p_{label}"])) for r in mine]
        assert per[corpus]["macro_f1"] == pytest.approx(f1_score([r["label"] for r in mine], predicted, average="macro"))


def test_balanced_sampling_repeats_the_smaller_corpus(two):
    from dmha.task import corpus_balanced

    items, _ = read_corpora(two[1:])
    small = [i for i in items if i.extra["corpus"] == "acted"][:4] + [i for i in items if i.extra["corpus"] == "crowd"]
    assert corpus_balanced(small, "proportional", 0) == list(range(len(small)))
    chosen = corpus_balanced(small, "balanced", 0)
    counts = {c: sum(small[k].extra["corpus"] == c for k in chosen) for c in ("acted", "crowd")}
    assert counts == {"acted": 18, "crowd": 18}


def test_cv_makes_folds_within_each_corpus(two, tiny_encoders, tmp_path):
    root, a, b = two
    result = cross_validate([a, b], tmp_path / "cv", load(None, _sets(tiny_encoders, root, "train.max_epochs=1")),
                            folds=3, seeds=[0], progress=False, echo=lambda *_: None)
    for fold in result["folds"]:
        assert {s.split("/")[0] for s in fold["test"]} == {"acted", "crowd"}  # every fold tests both
        assert len(fold["test"]) == 4
    assert [m.rsplit("/", 1)[-1] for m in result["manifest"]] == ["acted.csv", "crowd.csv"]  # relative paths
    summary = result["summary"]
    assert set(summary["per_corpus"]) == {"acted", "crowd"}
    per_fold = [r["per_corpus"]["acted"]["macro_f1"] for r in sorted(result["runs"], key=lambda r: r["fold"])]
    assert summary["per_corpus"]["acted"]["macro_f1"]["per_fold"] == pytest.approx(per_fold)
    assert "macro_f1_grouped" in summary["per_corpus"]["crowd"]
    # the peers on the same folds, per corpus (benchmarks/cv_peers.py): dmha's per-corpus figures there are
    # those of cv.json, each corpus scored on its own labels
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cv_peers as bench
    cv = bench.read_cv_dir(tmp_path / "cv")
    items, splits = bench.fold_splits(tmp_path / "cv", cv)
    codes = {label: n for n, label in enumerate(sorted({i.label for i in items}))}
    feats = np.eye(len(codes))[[codes[i.label] for i in items]][:, None, :] + np.random.default_rng(0).normal(
        size=(len(items), 1, len(codes))) * 0.1
    result = bench.compare(cv, items, splits, {"b": feats.astype(np.float32)}, draws=20, permutations=20)
    for corpus in ("acted", "crowd"):
        part = result["per_corpus"][corpus]
        assert part["dmha"]["alone"]["per_fold"] == pytest.approx(summary["per_corpus"][corpus]["macro_f1"]["per_fold"])
        assert part["dmha"]["grouped"]["per_fold"] == pytest.approx(
            summary["per_corpus"][corpus]["macro_f1_grouped"]["per_fold"])
        assert part["peers"]["b"]["mean"] == pytest.approx(1.0)  # a perfect probe, on the corpus's own labels
    assert "acted (on its own 3 labels)" in bench.format_table(result)


def test_cross_corpus_evaluation_scores_the_shared_labels(two, tiny_encoders, tmp_path, capsys):
    from dmha.cli import main

    root, a, b = two
    train(a, tmp_path / "acted_only", load(None, _sets(tiny_encoders, root)), progress=False)
    report = evaluate(tmp_path / "acted_only" / "model", b, "test", tmp_path / "eval", progress=False, report=False)
    assert report["labels_scored"] == ["fearful", "neutral"] and report["n"] == 2  # angry clips left out
    assert any("angry" in note for note in report["notes"]) and any("calm" in note for note in report["notes"])
    rows = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    assert all(r["prediction"] in ("fearful", "neutral") and float(r["p_calm"]) == 0 for r in rows)
    assert main(["evaluate", str(tmp_path / "acted_only" / "model"), "--manifest", str(b), "--labels", "neutral",
                 "--out", str(tmp_path / "one"), "--no-report"]) == 0
    assert "not predicted" in capsys.readouterr().err
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["labels_scored"] == ["neutral"]


def test_predict_among_a_subset_of_the_labels(joint, two, tmp_path):
    from dmha.cli import main
    from dmha.inference import EmotionRecognizer

    root, _ = joint
    files = sorted(str(p) for p in (root / "crowd").glob("*.wav"))[:3]
    rec = EmotionRecognizer.load(root / "joint" / "model", labels=["neutral", "fear", "angry"])
    assert rec.labels == ["angry", "fear", "neutral"]  # the model's order
    for pred in rec.predict(files, transcripts=["x"] * 3):
        assert set(pred.probs) == {"angry", "fear", "neutral"} and pred.label in pred.probs
        assert sum(pred.probs.values()) == pytest.approx(1.0, abs=1e-6)
    full = EmotionRecognizer.load(root / "joint" / "model").predict(files, transcripts=["x"] * 3)
    for pred, whole in zip(rec.predict(files, transcripts=["x"] * 3), full):  # renormalised, not recomputed
        total = sum(whole.probs[k] for k in pred.probs)
        assert all(pred.probs[k] == pytest.approx(whole.probs[k] / total, abs=1e-6) for k in pred.probs)
    out = tmp_path / "p.csv"
    assert main(["predict", str(root / "joint" / "model"), *files, "--labels", "neutral,calm", "--format", "csv",
                 "--out", str(out), "--no-asr"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert {r["label"] for r in rows} <= {"neutral", "calm"} and "p_angry" not in rows[0]
    assert main(["predict", str(root / "joint" / "model"), *files, "--labels", "bored"]) == 1


def test_a_rule_among_labels_never_picks_a_left_out_class_even_with_thresholds():
    rule = DecisionRule(["a", "b", "c"], thresholds=[0.0, 0.9, 0.9]).among(["b", "c"])
    probs = np.array([[0.8, 0.15, 0.05]])  # a is most probable, but left out; b and c miss their thresholds
    assert rule.decide(probs).tolist() == [1]  # the most probable allowed class
    assert np.allclose(rule.probabilities(probs), [[0.0, 0.75, 0.25]])
