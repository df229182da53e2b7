"""benchmarks/cross_corpus.py on two tiny corpora with different label sets and overlapping speaker ids."""
from __future__ import annotations

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


def test_cross_corpus_table(tiny_encoders, tmp_path):
    bench = _load("cross_corpus")
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
    assert 0 <= forward["dmha"]["alone"] <= 1 and 0 <= forward["probes"]["b"] <= 1
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
