"""benchmarks/enrolment.py on a small real cv: its end points are the cv's own alone and grouped figures."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
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


def test_enrolment_variants_span_alone_to_grouped(tiny_encoders, tmp_path):
    bench = _load("enrolment")
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=6, labels=("neutral", "low", "high"))
    rows = manifest.read_text().splitlines()
    # three clips per speaker and class: speakers s0..s5 become a, a, b, b, c, c (the folds keep them whole)
    manifest.write_text("\n".join([rows[0]] + [r.replace(f",s{j},", f",{'aabbcc'[j]},") for r in rows[1:]
                                               for j in range(6) if f",s{j}," in r]) + "\n")
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0"]
    result = cross_validate(manifest, tmp_path / "cv", load(None, sets), folds=3, seeds=[0], progress=False,
                            echo=lambda *_: None)
    assert bench.main([str(tmp_path / "cv")]) == 0
    figures = json.loads((tmp_path / "cv" / "enrolment.json").read_text())["variants"]
    per_fold = result["summary"]["per_fold"]
    assert figures["all"]["per_fold"] == pytest.approx([per_fold[str(f)]["macro_f1_grouped"] for f in range(3)])
    assert figures["alone"]["per_fold"] == pytest.approx([per_fold[str(f)]["macro_f1"] for f in range(3)])
    assert figures["alone"]["enrolment_s"] == 0 and figures["all"]["enrolment_s"] > figures["k=1"]["enrolment_s"] > 0
    assert {"neutral only", "low only", "high only", "k=16"} <= set(figures)


def test_enrolment_sets_never_hold_the_clip_itself_but_in_all():
    bench = _load("enrolment")
    speakers = np.array(["a"] * 4 + ["b"] * 4)
    labels = np.array(["neutral", "happy", "sad", "neutral"] * 2)
    test = np.arange(8)
    variants = bench.enrolments(test, speakers, labels, "neutral", np.random.default_rng(0))
    assert variants["alone"] == [[None] * 8]
    assert variants["all"][0][0] == [0, 1, 2, 3] and variants["all"][0][5] == [4, 5, 6, 7]
    for name, draws in variants.items():
        if name not in ("alone", "all"):
            for enrolled in draws:
                assert all(group is None or (i not in group and set(speakers[group]) == {speakers[i]})
                           for i, group in zip(test, enrolled))
    assert variants["neutral only"][0][0] == [3] and variants["neutral only"][0][1] == [0, 3]
    assert variants["happy only"][0][1] is None  # the speaker's only happy clip is the clip itself
    assert [len(g) for g in variants["k=2"][0]] == [2] * 8 and [len(g) for g in variants["k=16"][0]] == [3] * 8
