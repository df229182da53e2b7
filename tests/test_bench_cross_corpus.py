"""benchmarks/cross_corpus.py on two tiny corpora with different label sets and overlapping speaker ids."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import write_tone_corpus
from dmha.config import load
from dmha.cv import cross_validate

pytest.importorskip("sklearn")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_cross_corpus_table(tiny_encoders, tmp_path, monkeypatch):
    bench = _load("cross_corpus")
    peer_scores = []  # each probe's decision scores on the target clips, in the order the benchmark runs them

    def spy(*args, **kwargs):
        run = real(*args, **kwargs)
        peer_scores.append((list(args[4]), run["scores"]))
        return run

    real = bench.cv_peers.run_peer
    monkeypatch.setattr(bench.cv_peers, "run_peer", spy)
    a = _named(write_tone_corpus(tmp_path / "ravdess", n_per_class=6, labels=("neutral", "fearful", "calm")), "ravdess")
    b = _named(write_tone_corpus(tmp_path / "crema", n_per_class=6, labels=("neutral", "fear", "angry")), "crema-d")
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0"]
    config = load(None, sets)
    joint = cross_validate([a, b], tmp_path / "joint", config, folds=3, seeds=[0], progress=False, echo=lambda *_: None)
    single = cross_validate(a, tmp_path / "single", config, folds=3, seeds=[0], progress=False, echo=lambda *_: None)
    args = ["--ravdess", str(a), "--crema", str(b), "--seeds", "0", "--out", str(tmp_path / "out"),
            "--joint", str(tmp_path / "joint"), "--single", f"ravdess={tmp_path / 'single'}"]
    for override in sets:
        args += ["--set", override]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out" / "cross_corpus.json").read_text())
    forward = result["transfer"]["ravdess->crema-d"]
    assert forward["probes"]["labels"] == ["fear", "neutral"] and forward["probes"]["n"] == 12  # the 6 angry left out
    assert forward["dmha"]["per_seed"][0]["labels_scored"] == ["fearful", "neutral"]
    # dmha's figure is scikit-learn's macro-F1 of the predictions its evaluation wrote: the 12 fear and
    # neutral clips, under the source's names, predicted among the two labels
    from sklearn.metrics import f1_score

    for variant, figure in (("", "alone"), ("grouped", "grouped")):
        rows = list(csv.DictReader(open(tmp_path / "out" / "runs" / "ravdess_to_crema-d_seed0_eval" / variant
                                        / "predictions.csv", newline="")))
        truth = [r["label"] for r in rows]
        assert sorted(truth) == ["fearful"] * 6 + ["neutral"] * 6
        assert {r["prediction"] for r in rows} <= {"fearful", "neutral"}
        expected = f1_score(truth, [r["prediction"] for r in rows], average="macro")
        assert forward["dmha"]["per_seed"][0][figure] == pytest.approx(expected, abs=1e-9)
        assert forward["dmha"][figure] == pytest.approx(expected, abs=1e-9)  # one seed: the mean is its figure
    # the probes' figures: each target clip of a label both know (fear, neutral), its prediction the more
    # probable of those two columns of the probe's scores, scored by scikit-learn
    with open(b, newline="") as handle:
        crema = [r["label"] for r in csv.DictReader(handle)]
    keep = [label != "angry" for label in crema]
    truth = [label for label in crema if label != "angry"]
    assert len(peer_scores) == 4  # b and c, each way
    for (labels, scores), tag in zip(peer_scores[:2], ("b", "c")):
        assert labels == ["angry", "calm", "fear", "neutral"] and scores.shape == (18, 4)  # fearful is fear
        pred = [["fear", "neutral"][k] for k in scores[keep][:, [2, 3]].argmax(1)]
        assert forward["probes"][tag] == pytest.approx(f1_score(truth, pred, average="macro"), abs=1e-9)
    rows = {r["corpus"]: r for r in result["joint"]}
    assert set(rows) == {"ravdess", "crema-d"}
    assert rows["crema-d"]["alone"]["mean"] == pytest.approx(joint["summary"]["per_corpus"]["crema-d"]["macro_f1"]["mean"])
    versus = rows["ravdess"]["single_corpus"]["joint_minus_single"]  # the same 3 folds of the ravdess speakers
    single_alone = [single["summary"]["per_fold"][str(f)]["macro_f1"] for f in range(3)]
    assert versus["per_fold"] == pytest.approx([j - s for j, s in zip(rows["ravdess"]["alone"]["per_fold"], single_alone)])


def _named(manifest: Path, corpus: str) -> Path:
    """The manifest with a corpus column (as the importers write it)."""
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0] + ",corpus"] + [line + f",{corpus}" for line in lines[1:]]) + "\n")
    return manifest
