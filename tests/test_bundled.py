"""The bundled models: listed with their card and licence, loaded by name in every path (API, predict, serve,
evaluate, export), calibrated, and predicting the example clips with the probabilities recorded when they
were made (tests/data/bundled_reference.json, written by tools/ready_model.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dmha.cli import main
from dmha.examples import clips
from dmha.pretrained import DEFAULT, bundled, describe

REFERENCE = Path(__file__).parent / "data" / "bundled_reference.json"


def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def test_every_bundled_model_is_complete_and_the_default_is_one():
    models = bundled()
    assert DEFAULT in models, f"the default bundled model {DEFAULT} is missing (make ready-model)"
    assert set(reference()) == set(models), "tests/data/bundled_reference.json is stale: run tools/ready_model.py"
    for name, folder in models.items():
        for file in ("config.json", "model.safetensors", "labels.json", "calibration.json", "MODEL_CARD.md", "NOTICE.md"):
            assert (folder / file).is_file(), f"{name}: {file} missing"
        info = describe(name)
        assert info["classes"] and info["licence"] and info["training_data"]
        card = info["card"]
        for section in ("## Intended use", "## Out of scope", "## Training data", "## Licence", "## Quality",
                        "### Calibration", "## Speed", "## Known failure modes", "## Reproduce"):
            assert section in card, f"{name}: the card has no {section!r}"
        assert "not measured" not in card.lower(), f"{name}: its card still misses a measured figure"
        temperature = json.loads((folder / "calibration.json").read_text())["temperature"]
        assert temperature > 0 and temperature != 1.0
        assert "/work/" not in (folder / "config.json").read_text() and "/home/" not in (folder / "config.json").read_text()


def test_dmha_models_lists_names_classes_and_licences(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in bundled():
        info = describe(name)
        assert name in out and info["licence"] in out and ", ".join(info["classes"]) in out
    assert main(["models", DEFAULT]) == 0
    assert describe(DEFAULT)["card"].strip() in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(json.loads(REFERENCE.read_text())) if REFERENCE.is_file() else [])
def test_the_example_clips_get_their_reference_probabilities(name):
    from dmha.inference import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained(name)
    expected = reference()[name]
    for clip in clips():
        got = rec.predict(str(clip.path)).probs
        assert set(got) == set(expected[clip.path.name])
        worst = max(abs(got[k] - expected[clip.path.name][k]) for k in got)
        assert worst <= 1e-4, f"{name} on {clip.path.name}: probabilities moved by {worst:.2e}"


@pytest.mark.slow
def test_the_default_model_in_every_path(tmp_path, capsys):
    """No model named: predict, the API and serve use the default; evaluate and export take its name."""
    from fastapi.testclient import TestClient

    from dmha.inference import EmotionRecognizer
    from dmha.serve.app import create_app

    expected = reference()[DEFAULT]
    clip = clips()[0]
    assert main(["predict", str(clip.path), "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert max(abs(record["probs"][k] - v) for k, v in expected[clip.path.name].items()) <= 1e-4

    rec = EmotionRecognizer()
    top = rec(str(clip.path), top_k=1)[0]
    assert top["score"] == pytest.approx(max(expected[clip.path.name].values()), abs=1e-4)

    with TestClient(create_app(rec)) as client:
        model = client.get("/v1/model").json()
        assert model["card"] and DEFAULT in model["card"] and model["members"][0]["temperature"] != 1.0
        answer = client.post("/v1/predict", files={"file": (clip.path.name, clip.path.read_bytes())}).json()
        assert max(abs(answer["probs"][k] - v) for k, v in expected[clip.path.name].items()) <= 1e-4

    manifest = tmp_path / "examples.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "speaker"])
        writer.writerows([str(c.path), c.label, "test", c.speaker] for c in clips())
    assert main(["evaluate", DEFAULT, "--manifest", str(manifest), "--out", str(tmp_path / "eval"), "--no-report"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == len(clips()) and 0 <= metrics["macro_f1"] <= 1 and "ece" in metrics

    onnx = pytest.importorskip("onnxruntime")
    assert main(["export", DEFAULT, "--out", str(tmp_path / "head.onnx")]) == 0
    sidecar = json.loads((tmp_path / "head.json").read_text())
    assert sidecar["labels"] == rec.labels
    # the graph gives the torch head's probabilities (calibration included) on the clips' features
    import dataclasses

    from dmha.batches import collate
    from dmha.data.manifest import read_manifest
    from dmha.extraction import features_for
    from dmha.modeldir import load_model_dir

    bundle = load_model_dir(describe_path(DEFAULT))
    config = dataclasses.replace(bundle.config, features=dataclasses.replace(bundle.config.features,
                                                                             cache_dir=str(tmp_path / "cache")))
    data = features_for(read_manifest(manifest), config, norm=bundle.norm, progress=False)
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in data.refs])
    expected = bundle.model.predict_proba(batch)[0].numpy()
    session = onnx.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    (probs,) = session.run(None, feeds)
    assert np.abs(probs - expected).max() <= 1e-4


def describe_path(name: str) -> Path:
    return bundled()[name]
