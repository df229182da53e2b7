"""benchmarks/label_set.py: how often a corpus's clips are answered with a label their corpus never offered."""
import csv
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import label_set  # noqa: E402


def _write(path: Path, fields, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_counts_answers_outside_the_corpus_labels(tmp_path):
    cv = tmp_path / "cv"
    (cv).mkdir()
    (cv / "cv.json").write_text(json.dumps({"runs": [{"run": "fold0/seed0"}]}))
    manifest = [{"path": "../a/r1.wav", "corpus": "ravdess"}, {"path": "../a/r2.wav", "corpus": "ravdess"},
                {"path": "../b/c1.wav", "corpus": "crema-d"}, {"path": "../b/c2.wav", "corpus": "crema-d"},
                {"path": "../b/c3.wav", "corpus": "crema-d"}]
    _write(cv / "fold0" / "manifest.csv", ["path", "corpus"], manifest)
    fields = ["path", "label", "prediction", "p_calm", "p_fearful", "p_sad"]
    rows = [{"path": "/x/a/r1.wav", "label": "calm", "prediction": "calm", "p_calm": 0.8, "p_fearful": 0.1, "p_sad": 0.1},
            {"path": "/x/a/r2.wav", "label": "fearful", "prediction": "fearful", "p_calm": 0.1, "p_fearful": 0.8, "p_sad": 0.1},
            {"path": "/x/b/c1.wav", "label": "fear", "prediction": "fear", "p_calm": 0.6, "p_fearful": 0.3, "p_sad": 0.1},
            {"path": "/x/b/c2.wav", "label": "sad", "prediction": "sad", "p_calm": 0.1, "p_fearful": 0.1, "p_sad": 0.8},
            {"path": "/x/b/c3.wav", "label": "fear", "prediction": "fear", "p_calm": 0.2, "p_fearful": 0.7, "p_sad": 0.1}]
    _write(cv / "fold0" / "seed0" / "eval_test" / "predictions.csv", fields, rows)
    result = label_set.summarise(*label_set.read_runs(cv))
    assert result["labels"] == ["calm", "fear", "sad"]  # canonical names
    crema = result["corpora"]["crema-d"]
    assert crema["labels_never_offered"] == ["calm"] and crema["answered_with_one_of_them"] == 1
    assert crema["share"] == pytest.approx(1 / 3)
    assert crema["per_class_f1_over_all_labels"]["fear"] == pytest.approx(2 / 3)  # 1 of 2 fear right, no false fear
    assert result["corpora"]["ravdess"]["answered_with_one_of_them"] == 0
