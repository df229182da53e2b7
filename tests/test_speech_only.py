"""A speech-only model (`encoders.text = "none"`): no text branch, no ASR, in every path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_tone_corpus
from dmha.cli import main
from dmha.config import load
from dmha.data.manifest import read_manifest
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer
from dmha.modeldir import load_model_dir
from helpers import assert_batch_invariant, wav_bytes


@pytest.fixture(scope="module")
def speech_only(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_only")
    rows = write_tone_corpus(root / "corpus").read_text().splitlines()
    manifest = root / "corpus" / "no_transcripts.csv"  # no transcript column: nothing to transcribe
    manifest.write_text("\n".join(",".join(r.split(",")[:4]) for r in rows) + "\n")
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", "encoders.text=none",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=2", "train.batch_size=4",
                         "model.hidden_layers=1", "encoders.asr=no-such-asr"])  # any ASR use would fail
    metrics = train(manifest, root / "run", config, progress=False)
    return root, manifest, metrics


def test_speech_only_trains_with_no_text_branch_and_no_asr(speech_only):
    root, manifest, metrics = speech_only
    bundle = load_model_dir(root / "run" / "model")
    assert bundle.text.dim == 0 and bundle.text.name == "none"
    assert bundle.model.text_proj is None and bundle.model.text_norm is None
    assert not any("text" in name for name, _ in bundle.model.named_parameters())
    assert 0 <= metrics["macro_f1"] <= 1
    assert evaluate(root / "run" / "model", manifest, out=root / "eval", progress=False,
                    report=False)["macro_f1"] == pytest.approx(metrics["macro_f1"])


def test_speech_only_predicts_without_asr_and_is_batch_invariant(speech_only):
    root, manifest, _ = speech_only
    rec = EmotionRecognizer.load(root / "run" / "model")
    assert not rec.reads_text
    rec.transcribe = lambda waves: pytest.fail("a speech-only model ran ASR")
    preds = rec.predict([i.path for i in read_manifest(manifest)])
    assert all(p.transcript == "" and abs(sum(p.probs.values()) - 1) < 1e-5 for p in preds)
    assert_batch_invariant(rec, read_manifest(manifest)[:6])


def test_speech_only_exports_speech_inputs_only(speech_only, tmp_path):
    import onnxruntime as ort

    from dmha.batches import collate
    from dmha.extraction import features_for

    root, manifest, _ = speech_only
    assert main(["export", str(root / "run" / "model"), "--format", "onnx", "--out", str(tmp_path / "h.onnx")]) == 0
    sidecar = json.loads((tmp_path / "h.json").read_text())
    assert set(sidecar["inputs"]) == {"speech", "speech_mask"}
    bundle = load_model_dir(root / "run" / "model")
    data = features_for(read_manifest(manifest), bundle.config, norm=bundle.norm,
                     progress=False)
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in data.refs[:4]])
    reference = bundle.model.predict_proba(batch)[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "h.onnx"))
    assert [i.name for i in session.get_inputs()] == ["speech", "speech_mask"]
    (probs,) = session.run(None, {"speech": batch["speech"].numpy(), "speech_mask": batch["speech_mask"].numpy()})
    assert np.abs(probs - reference).max() < 1e-4


def test_speech_only_serves_without_a_transcript(speech_only):
    from fastapi.testclient import TestClient

    from dmha.serve.app import create_app

    root, _, _ = speech_only
    rec = EmotionRecognizer.load(root / "run" / "model")
    rec.transcribe = lambda waves: pytest.fail("a speech-only model ran ASR")
    with TestClient(create_app(rec)) as client:
        response = client.post("/v1/predict", files={"file": ("clip.wav", wav_bytes(), "audio/wav")})
        assert response.status_code == 200, response.text
        assert response.json()["transcript"] == "" and set(response.json()["probs"]) == {"low", "high"}
