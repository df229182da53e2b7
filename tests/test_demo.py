"""`dmha demo` end to end, offline, on the synthesised corpus (slow: the real embedded models)."""
import json

import pytest

from dmha.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_offline_and_beats_chance(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DMHA_HOME", str(tmp_path / "home"))  # cold caches: the whole pipeline really runs
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "demo"
    assert sorted(p.name for p in (out / "model").iterdir()) == ["calibration.json", "config.json", "labels.json",
                                                            "model.safetensors", "training_log.csv"]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("macro_f1", "accuracy", "uar", "per_class", "n"):
        assert key in metrics
    assert metrics["split"] == "test" and metrics["n"] > 0
    assert metrics["macro_f1"] > 0.5, metrics["macro_f1"]  # 4 classes: chance is 0.25
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert records and set(records[0]) == {"path", "label", "probs", "transcript"}
    assert summary["test_macro_f1"] == round(metrics["macro_f1"], 4)
