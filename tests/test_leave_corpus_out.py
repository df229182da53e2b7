"""Leave-one-corpus-out (issue 35, item 2): three corpora with different label sets; each fold trains on two
and scores every clip of the third, each alone; labels no training corpus offers are left out and counted;
the corpus left out is never recorded in the model; the probe (b) runs on the same folds."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from conftest import write_tone_corpus
from dmha.config import ConfigError, load
from dmha.cv import cross_validate
from dmha.data.manifest import ManifestError

LABELS = {"acted": ("neutral", "fearful", "calm"), "crowd": ("neutral", "fear", "angry"),
          "phone": ("angry", "calm", "happy")}  # `happy` only in phone: left out when phone is the one tested


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("three_corpora")
    manifests = []
    for seed, (name, labels) in enumerate(LABELS.items()):
        written = write_tone_corpus(root / name, n_per_class=6, labels=labels, seed=seed)
        rows = written.read_text().splitlines()
        manifest = root / f"{name}.csv"
        manifest.write_text("\n".join([rows[0]] + [f"{name}/{r}" for r in rows[1:]]) + "\n")
        manifests.append(manifest)
    return root, manifests


def _config(tiny_encoders, root):
    return load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                       f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                       "model.hidden_layers=1", "train.crop_s=0"])


@pytest.fixture(scope="module")
def loco(three, tiny_encoders, tmp_path_factory):
    root, manifests = three
    out = tmp_path_factory.mktemp("loco") / "cv"
    result = cross_validate(manifests, out, _config(tiny_encoders, root), folds=None, seeds=[0], progress=False,
                            echo=lambda *_: None, leave_corpus_out=True)
    return out, result


def test_one_fold_per_corpus_trains_on_the_others(loco):
    out, result = loco
    assert result["leave_corpus_out"] is True and result["protocol"].startswith("leave one corpus out")
    assert [f["name"] for f in result["folds"]] == ["acted", "crowd", "phone"]
    for fold in result["folds"]:
        tested = fold["name"]
        assert {s.split("/")[0] for s in fold["test"]} == {tested} and len(fold["test"]) == 6
        # dev: the other corpora's dev-split speaker (s4 in each tone corpus), nobody of the tested corpus
        assert sorted(fold["dev"]) == sorted(f"{c}/s4" for c in LABELS if c != tested)
        with open(out / f"fold{fold['fold']}" / "manifest.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            corpus = row["corpus"]
            want = "test" if corpus == tested else "dev" if row["speaker"] == "s4" else "train"
            if corpus == tested and row["label"] not in {label for c, own in LABELS.items() if c != tested
                                                         for label in own} | {"fear"}:
                want = "left_out"  # no training corpus offers the label: listed, never used
            assert row["split"] == want, row
    assert [f["left_out"] for f in result["folds"]] == [{}, {}, {"happy": 6}]
    assert "per_corpus" not in result["summary"]  # each fold is one corpus: the per-fold figures are those


def test_the_left_out_corpus_is_scored_alone_over_all_the_models_labels(loco):
    out, result = loco
    for run in result["runs"]:
        fold = result["folds"][run["fold"]]
        tested = fold["name"]
        model_config = json.loads((out / run["run"] / "model" / "config.json").read_text())
        corpora = model_config["meta"]["corpora"]["labels"]
        assert tested not in corpora and set(corpora) == set(LABELS) - {tested}  # never recorded in the model
        with open(out / run["run"] / "eval_test" / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 18 - sum(fold["left_out"].values())
        assert {Path(r["path"]).parent.name for r in rows} == {tested}
        labels = json.loads((out / run["run"] / "model" / "labels.json").read_text())
        # predictions range over every label of the model, not only those the tested corpus offers
        assert all(r["prediction"] in labels for r in rows)
        assert run["macro_f1"] == pytest.approx(f1_score([r["label"] for r in rows], [r["prediction"] for r in rows],
                                                         average="macro"))


def test_the_probe_runs_on_the_same_folds(loco):
    out, result = loco
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cv_peers as bench
    cv = bench.read_cv_dir(out)
    items, splits = bench.fold_splits(out, cv)
    for fold, split in zip(result["folds"], splits):
        tested = {items[k].extra.get("corpus") for k in split["test"]}
        assert tested == {fold["name"]}
        assert all(items[k].extra.get("corpus") != fold["name"] for k in np.r_[split["train"], split["dev"]])
    codes = {label: n for n, label in enumerate(sorted({i.label for i in items}))}
    feats = np.eye(len(codes))[[codes[i.label] for i in items]][:, None, :] + np.random.default_rng(0).normal(
        size=(len(items), 1, len(codes))) * 0.1
    compared = bench.compare(cv, items, splits, {"b": feats.astype(np.float32)}, draws=20, permutations=20)
    assert compared["folds"] == ["acted", "crowd", "phone"] and "per_corpus" not in compared
    # a perfect probe on the labels its training corpora offer: every fold's clips it can name, it names
    assert all(r["macro_f1"] == pytest.approx(1.0) for r in compared["peers"]["b"]["per_fold"])


def test_bad_uses_are_clear_errors(three, tiny_encoders, tmp_path):
    root, manifests = three
    config = _config(tiny_encoders, root)
    with pytest.raises(ConfigError, match="--folds and --fold-column do not apply"):
        cross_validate(manifests, tmp_path / "a", config, folds=5, seeds=[0], leave_corpus_out=True, progress=False)
    with pytest.raises(ConfigError, match="--dev-only would score nothing"):
        cross_validate(manifests, tmp_path / "b", config, folds=None, seeds=[0], leave_corpus_out=True,
                       dev_only=True, progress=False)
    with pytest.raises(ManifestError, match="names no corpus; leave-one-corpus-out needs a corpus column"):
        cross_validate(manifests[:1], tmp_path / "c", config, folds=None, seeds=[0], leave_corpus_out=True,
                       progress=False)
    no_dev = root / "nodev.csv"
    no_dev.write_text(manifests[2].read_text().replace(",dev,", ",train,"))
    with pytest.raises(ManifestError, match="no speaker in the dev split"):
        cross_validate([manifests[0], no_dev], tmp_path / "d", config, folds=None, seeds=[0],
                       leave_corpus_out=True, progress=False)
