"""benchmarks/crema_targets.py: macro-F1 against the portrayed label and the crowd's majority, and the
intensity CCC, per fold of cv folders, compared fold by fold with the first (on hand-made cv folders)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crema_targets  # noqa: E402

CLIPS = [  # path, portrayed label, crowd majority, intensity
    ("a.wav", "angry", "angry", 80.0), ("b.wav", "angry", "neutral", 40.0), ("c.wav", "sad", "sad", 30.0),
    ("d.wav", "sad", "neutral,sad", 20.0), ("e.wav", "neutral", "neutral", 10.0), ("f.wav", "neutral", "angry", 60.0),
]


def _manifest(root: Path) -> Path:
    path = root / "m.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "speaker", "vote_majority", "vote_intensity"])
        for i, (name, label, majority, intensity) in enumerate(CLIPS):
            writer.writerow([name, label, "train", f"s{i % 2}", majority, intensity])
    return path


def _cv(root: Path, name: str, predictions: list[list[str]], intensity: list[list[float]] | None = None) -> Path:
    """A cv folder of 2 folds x 1 seed whose fold k's test clips are CLIPS[3k:3k+3]."""
    folder = root / name
    folds = []
    for fold in range(2):
        run = folder / f"fold{fold}" / "seed0"
        (run / "eval_test").mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
        clips = CLIPS[3 * fold:3 * fold + 3]
        with open(run / "eval_test" / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "prediction", *(["vote_intensity"] if intensity else [])])
            for k, (clip, label, _, _) in enumerate(clips):
                extra = [f"{intensity[fold][k]}"] if intensity else []
                writer.writerow([str((root / clip).resolve()), label, predictions[fold][k], *extra])
        folds.append({"fold": fold})
    (folder / "cv.json").write_text(json.dumps({"seeds": [0], "folds": folds}))
    return folder


def test_scores_against_label_and_majority_and_compares_with_the_first(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    hard = _cv(tmp_path, "hard", [["angry", "angry", "sad"], ["sad", "neutral", "neutral"]])
    soft = _cv(tmp_path, "soft", [["angry", "neutral", "sad"], ["sad", "neutral", "angry"]],
               intensity=[[80.0, 40.0, 30.0], [25.0, 10.0, 55.0]])
    out = tmp_path / "out.json"
    assert crema_targets.main(["--manifest", str(manifest), str(hard), str(soft), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    fold0_hard, fold0_soft = result["folds"][str(hard)]["0"], result["folds"][str(soft)]["0"]
    # fold 0: labels angry, angry, sad; hard predicts all right, soft calls b neutral (its crowd majority):
    # neutral, predicted but never true, counts as a class with F1 0 (scikit-learn's macro-F1, dmha.metrics)
    assert fold0_hard["macro_f1_label"] == 1.0 and fold0_soft["macro_f1_label"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert fold0_soft["macro_f1_majority"] == 1.0 and fold0_hard["macro_f1_majority"] < 1.0
    assert result["folds"][str(hard)]["1"]["n_majority"] == 2  # d's majority is a tie: left out
    assert result["folds"][str(soft)]["0"]["ccc_intensity"] == pytest.approx(1.0)
    versus = result["summary"][str(soft)]["macro_f1_majority"]["vs_baseline"]
    assert versus["folds"] == 2 and versus["won"] >= 1
    assert "ccc_intensity" not in result["summary"][str(hard)]
    assert "soft" in capsys.readouterr().out
