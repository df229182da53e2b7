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
        temperature = json.loads((folder / "calibration.json").read_text())["temperature"]
        assert temperature > 0 and temperature != 1.0
        assert "/work/" not in (folder / "config.json").read_text() and "/home/" not in (folder / "config.json").read_text()


@pytest.mark.parametrize("name", sorted(bundled()))
def test_each_card_is_written_from_the_committed_results_of_its_own_recipe(name):
    """The card is exactly what tools/ready_model.py writes from the committed JSONs (every figure a link that
    tests/test_results.py checks), and it leads with the cv of this model's own recipe and classes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import ready_model

    spec = next(s for s in ready_model.MODELS if s.name == name)
    folder = bundled()[name]
    text = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert text == ready_model.card(spec, folder), f"{name}: MODEL_CARD.md is stale: python tools/ready_model.py --card-only"
    assert "not measured" not in text.lower(), f"{name}: its card misses a measured figure"
    sections = ["### Speaker cross-validation of this recipe", "### This model on its own test speakers", "### Across corpora"]
    assert all(h in text for h in sections) and [text.index(h) for h in sections] == sorted(text.index(h) for h in sections)
    cv = json.loads(ready_model.evidence(spec)["cv"].read_text(encoding="utf-8"))
    import tomllib

    recipe = tomllib.loads(spec.config.read_text(encoding="utf-8"))
    for section, values in recipe.items():  # the cv ran this model's config ...
        for key, value in values.items():
            assert cv["config"][section][key] == value, f"{name}: the cv's {section}.{key} is not the model's"
    assert cv["summary"]["folds_done"] >= 5 and cv["seeds"]
    if len(cv["seeds"]) < 3:  # the protocol's 3 seeds: a card with fewer says so
        assert f"{len(cv['seeds'])} seed" in text and "dmha's protocol is 3" in text
    heldout = json.loads(ready_model.evidence(spec)["heldout"].read_text(encoding="utf-8"))
    labels = json.loads((folder / "labels.json").read_text())
    labels = labels["labels"] if isinstance(labels, dict) else labels
    assert heldout["labels"] == labels and sorted(heldout["per_class"]) == sorted(labels)  # ... and its classes
    assert heldout["model"] == f"pretrained/{spec.folder}"  # the bundled weights themselves
    for page, link in ready_model.PAGES.items():  # the README's and the Results page's rows are current
        rows = "\n".join(ready_model.summary_rows(link))
        assert rows in (ready_model.ROOT / page).read_text(encoding="utf-8"), f"{page}: stale rows (--card-only)"
    cited = text.count("](../../../../benchmarks/results/bundled_cv/")
    assert cited >= 10 * len(spec.corpora), f"{name}: only {cited} figures of its own cv and held-out run are cited"


def test_dmha_models_lists_names_classes_and_licences(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in bundled():
        info = describe(name)
        assert name in out and info["licence"] in out and ", ".join(info["classes"]) in out
    assert main(["models", DEFAULT]) == 0
    assert describe(DEFAULT)["card"].strip() in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({DEFAULT, *bundled()}))  # the models, not the reference: none missing
def test_the_example_clips_get_their_reference_probabilities(name):
    from dmha.inference import EmotionRecognizer

    assert REFERENCE.is_file(), f"{REFERENCE.name} is missing: run tools/ready_model.py"
    expected = reference().get(name)
    assert expected, f"{REFERENCE.name} has no probabilities for {name}: run tools/ready_model.py"
    assert set(expected) == {clip.path.name for clip in clips()}, f"{REFERENCE.name} is stale for {name}"
    rec = EmotionRecognizer.from_pretrained(name)
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
    # the figures of the reference's predictions (each clip alone, argmax), scored by scikit-learn
    from sklearn.metrics import accuracy_score, f1_score

    truth = [c.label for c in clips()]
    predicted = [max(expected[c.path.name], key=expected[c.path.name].get) for c in clips()]
    assert metrics["n"] == len(clips()) and "ece" in metrics
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-9)

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
