"""Calibrated probabilities: ECE and Brier by their definitions, the temperature fit, and the temperature
applied wherever probabilities come out (train, evaluate, predict, ensembles, ONNX, `dmha calibrate`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dmha.calibration import CALIBRATION_FILE, calibration_payload, fit_temperature, softmax
from dmha.cli import main
from dmha.config import load
from dmha.data.manifest import read_manifest
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer
from dmha.metrics import brier_score, expected_calibration_error, reliability
from conftest import write_tone_corpus


def test_ece_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    targets = np.array([0, 1, 1, 0])
    # bins of 1/15: 0.9 → bin 13 (right), 0.8 → bin 12 (wrong), 0.7 → bin 10 (right), 0.55 → bin 8 (wrong)
    assert expected_calibration_error(probs, targets) == pytest.approx((0.1 + 0.8 + 0.3 + 0.55) / 4)
    assert brier_score(probs, targets) == pytest.approx(np.mean([0.02, 1.28, 0.18, 0.605]))
    bins = reliability(probs, targets)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 4 and bins[13]["accuracy"] == 1.0
    assert expected_calibration_error(np.array([[1.0, 0.0]] * 3), [0, 0, 0]) == 0.0


def test_the_temperature_of_an_overconfident_model_is_found():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    targets = np.array([rng.choice(5, p=p) for p in softmax(logits, 2.5)])  # the truth is T = 2.5
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.08)
    payload = calibration_payload(logits, targets, "synthetic")
    assert payload["ece_after"] < payload["ece_before"] and payload["brier_after"] < payload["brier_before"]


@pytest.fixture(scope="module")
def calibrated(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    manifest = write_tone_corpus(root / "corpus", n_per_class=8, labels=("low", "mid", "high"))
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=3", "train.batch_size=4",
                         "model.hidden_layers=1", "train.crop_s=0"])
    metrics = train(manifest, root / "run", config, progress=False)
    return root, manifest, metrics


def test_training_fits_a_temperature_on_dev_and_every_path_applies_it(calibrated, tmp_path):
    root, manifest, metrics = calibrated
    stored = json.loads((root / "run" / "model" / CALIBRATION_FILE).read_text())
    temperature = stored["temperature"]
    assert metrics["calibration"]["temperature"] == temperature and temperature != 1.0
    assert stored["fitted_on"].startswith("the dev split") and {"ece", "brier"} <= set(metrics)
    rec = EmotionRecognizer.load(root / "run" / "model")
    assert rec.members[0].bundle.model.temperature == temperature
    items = [i for i in read_manifest(manifest) if i.split == "test"]
    calibrated_probs = rec.predict([i.path for i in items], transcripts=[i.transcript for i in items])
    (root / "run" / "model" / CALIBRATION_FILE).rename(tmp_path / "kept.json")
    try:
        raw = EmotionRecognizer.load(root / "run" / "model").predict([i.path for i in items],
                                                                      transcripts=[i.transcript for i in items])
    finally:
        (tmp_path / "kept.json").rename(root / "run" / "model" / CALIBRATION_FILE)
    for cal, unc in zip(calibrated_probs, raw):
        labels = list(unc.probs)
        logits = np.log([unc.probs[k] for k in labels])  # logits up to a constant
        assert np.allclose([cal.probs[k] for k in labels], softmax(logits[None], temperature)[0], atol=1e-5)
        assert cal.label == unc.label  # a temperature changes no prediction
    report = evaluate(root / "run" / "model", manifest, "test", tmp_path / "eval", progress=False)
    assert report["ece"] == pytest.approx(metrics["ece"], abs=1e-6)
    assert "reliability diagram" in (tmp_path / "eval" / "report.html").read_text()


def test_dmha_calibrate_refits_every_member_and_onnx_carries_it(calibrated, tmp_path):
    import shutil

    from dmha.ensemble import make_ensemble

    root, manifest, _ = calibrated
    model = tmp_path / "model"
    shutil.copytree(root / "run" / "model", model)
    assert main(["calibrate", str(model), "--manifest", str(manifest), "--split", "test"]) == 0
    refit = json.loads((model / CALIBRATION_FILE).read_text())
    assert refit["fitted_on"].endswith("(test, 3 clips)")
    make_ensemble([model, root / "run" / "model"], tmp_path / "ens")
    assert main(["calibrate", str(tmp_path / "ens"), "--manifest", str(manifest)]) == 0
    for member in (tmp_path / "ens" / "members").iterdir():
        assert json.loads((member / CALIBRATION_FILE).read_text())["fitted_on"].endswith("(dev, 3 clips)")
    assert main(["calibrate", str(model), "--manifest", str(manifest), "--split", "nope"]) == 1


@pytest.mark.slow
def test_the_onnx_graph_applies_the_temperature(calibrated, tmp_path):
    import onnxruntime as ort

    from dmha.batches import collate
    from dmha.export import export_onnx
    from dmha.extraction import features_for
    from dmha.modeldir import load_model_dir

    root, manifest, _ = calibrated
    sidecar = json.loads(export_onnx(root / "run" / "model", tmp_path / "h.onnx").read_text())
    bundle = load_model_dir(root / "run" / "model")
    assert sidecar["calibration"]["temperature"] == bundle.model.temperature != 1.0
    data = features_for(read_manifest(manifest), bundle.config, norm=bundle.norm, progress=False)
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in data.refs[:4]])
    session = ort.InferenceSession(str(tmp_path / "h.onnx"))
    (probs,) = session.run(None, {k: batch[k].numpy() for k in ("speech", "speech_mask", "text", "text_mask")})
    assert np.abs(probs - bundle.model.predict_proba(batch)[0].numpy()).max() < 1e-4
