"""benchmarks/calibration_methods.py: its maps recover known miscalibration, the choice is read on dev
with ties to the simplest map, and a cv folder's figures are the metrics of its predictions."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import calibration_methods as cm  # noqa: E402

from dmha.calibration import softmax  # noqa: E402
from dmha.metrics import expected_calibration_error  # noqa: E402


def _draw(logits: np.ndarray, rng) -> np.ndarray:
    p = softmax(logits)
    return np.array([rng.choice(len(row), p=row) for row in p])


def test_the_temperature_map_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(3000, 4)) * 2
    targets = _draw(true, rng)
    scale = cm.fit_map("temperature", 3 * true, targets)[0]  # three times too confident
    assert scale == pytest.approx(1 / 3, rel=0.1)


def test_the_bias_map_finds_a_class_offset():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(4000, 3))
    offset = np.array([1.0, 0.0, -1.0])
    targets = _draw(true + offset, rng)
    fitted = cm.fit_map("bias", true, targets)
    assert fitted - fitted.mean() == pytest.approx(offset - offset.mean(), abs=0.15)
    vector = cm.fit_map("vector", true, targets)
    assert vector[3:] - vector[3:].mean() == pytest.approx(offset - offset.mean(), abs=0.2)


def test_a_richer_map_must_lower_ece_beyond_the_tie_without_raising_brier():
    assert cm.choose([0.080, 0.079, 0.070], [0.40, 0.40, 0.39]) == "vector"
    assert cm.choose([0.080, 0.0760, 0.0770], [0.40, 0.39, 0.39]) == "temperature"  # within the tie
    assert cm.choose([0.090, 0.080, 0.0790], [0.40, 0.39, 0.39]) == "bias"
    assert cm.choose([0.090, 0.080, 0.0700], [0.40, 0.41, 0.42]) == "temperature"  # Brier got worse


def _write_predictions(path: Path, labels, probs, targets, names):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "prediction"] + [f"p_{n}" for n in labels])
        for name, p, t in zip(names, probs, targets):
            w.writerow([f"/audio/{name}", labels[t], labels[int(np.argmax(p))]] + [f"{x:.6f}" for x in p])


def test_a_cv_folder_is_summarised_from_its_predictions(tmp_path):
    rng = np.random.default_rng(2)
    labels = ["angry", "happy", "sad"]
    runs, shipped = [], []
    for fold in range(3):
        fold_dir = tmp_path / f"fold{fold}"
        rows = []
        for part in ("dev", "test"):
            logits = rng.normal(size=(60, 3)) * 3
            targets = _draw(logits / 3, rng)  # over-confident by 3
            names = [f"{part}{fold}_{i}.wav" for i in range(60)]
            probs = softmax(logits)
            _write_predictions(fold_dir / "seed0" / f"eval_{part}" / "predictions.csv", labels, probs, targets, names)
            rows += [{"path": f"audio/{n}", "speaker": f"s{i % 6}"} for i, n in enumerate(names)]
            if part == "test":
                shipped.append(expected_calibration_error(np.round(probs, 6), targets))
        with open(fold_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["path", "speaker"])
            w.writeheader()
            w.writerows(rows)
        runs.append({"fold": fold, "seed": 0})
    (tmp_path / "cv.json").write_text(json.dumps({"seeds": [0], "runs": runs}))
    summary = cm.summarise(tmp_path)
    methods = summary["methods"]
    assert methods["shipped"]["test"]["ece"]["mean"] == pytest.approx(np.mean(shipped), abs=1e-4)
    assert methods["shipped"]["test"]["ece"]["n_folds"] == 3
    # the maps were fitted on dev and undo the over-confidence on the test clips
    assert methods["temperature"]["test"]["ece"]["mean"] < methods["shipped"]["test"]["ece"]["mean"]
    assert set(methods) == {"shipped", *cm.METHODS} and "dev" not in methods["shipped"]
    assert summary["chosen_on_dev"] in cm.METHODS
