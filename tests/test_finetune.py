"""Partial fine-tuning end to end (encoders.finetune_layers): training, the store, the model directory, export."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_tone_corpus
from helpers import assert_batch_invariant
from dmha.config import load
from dmha.data.manifest import read_manifest
from dmha.encoders.registry import speech_encoder
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.inference import EmotionRecognizer
from dmha.modeldir import ModelDirError, load_model_dir
from dmha.training import parameter_groups


def _overrides(tiny_encoders, cache, *extra):
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=2", "train.batch_size=4", "model.hidden_layers=1",
            "train.crop_s=0.5", "train.encoder_lr=1e-3", *extra]


@pytest.fixture(scope="module")
def runs(tiny_encoders, tmp_path_factory):
    """The same corpus trained frozen, then with the tiny WavLM's top layer live, on one store."""
    root = tmp_path_factory.mktemp("finetune")
    manifest = write_tone_corpus(root / "corpus")
    frozen = train(manifest, root / "frozen", load(None, _overrides(tiny_encoders, root / "cache")), progress=False)
    tuned = train(manifest, root / "tuned", load(None, _overrides(tiny_encoders, root / "cache",
                                                                  "encoders.finetune_layers=1")), progress=False)
    return root, manifest, frozen, tuned


def test_switching_n_reuses_the_store_and_trains_only_the_top_layer(runs, tiny_encoders):
    root, _, frozen, tuned = runs
    assert frozen["features_computed"] > 0 and tuned["features_computed"] == 0
    weights = load_file(str(root / "tuned" / "model" / "model.safetensors"))
    top = {k.removeprefix("top.layers.0."): v for k, v in weights.items() if k.startswith("top.layers.0.")}
    assert top and not any(k.startswith("top.layers.1.") for k in weights)  # one live layer, nothing below
    encoder = speech_encoder(load(None, _overrides(tiny_encoders, root / "cache")).encoders)
    base = {k: v for k, v in encoder.model.encoder.layers[-1].state_dict().items()}
    assert set(top) <= set(base)
    assert any(not torch.allclose(top[k], base[k]) for k in top)  # the live copy trained ...
    again = speech_encoder(load(None, _overrides(tiny_encoders, root / "cache")).encoders)
    assert all(torch.equal(v, again.model.encoder.layers[-1].state_dict()[k]) for k, v in base.items())  # ... the encoder did not
    config = json.loads((root / "tuned" / "model" / "config.json").read_text())
    assert config["config"]["encoders"]["finetune_layers"] == 1
    assert config["speech_encoder"]["identity"] == encoder.info.identity  # base encoder + weights fingerprint


def test_the_live_layers_get_their_own_learning_rates(runs):
    root, *_ = runs
    bundle = load_model_dir(root / "tuned" / "model")
    cfg = load(None, ["encoders.finetune_layers=1", "train.encoder_lr=2e-5", "train.encoder_lr_decay=0.5"]).train
    groups = parameter_groups(bundle.model, cfg)
    top_ids = {id(p) for p in bundle.model.top.layers.parameters()}
    live = [g for g in groups if any(id(p) in top_ids for p in g["params"])]
    assert len(live) == 1 and live[0]["lr"] == 2e-5
    assert not any(id(p) in top_ids for p in groups[0]["params"])  # the head's group holds none of them
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_model_dir_round_trip_evaluate_and_predict(runs):
    """evaluate (cached lower states, live top) equals training's test score; predict runs the encoder
    live and is batch-invariant."""
    root, manifest, _, tuned = runs
    report = evaluate(root / "tuned" / "model", manifest, "test", root / "eval", progress=False, report=False)
    assert report["macro_f1"] == pytest.approx(tuned["test"]["macro_f1"])
    rec = EmotionRecognizer.load(root / "tuned" / "model")
    assert_batch_invariant(rec, read_manifest(manifest)[:6])


def test_a_model_dir_needs_the_encoder_it_was_tuned_on(runs, tiny_encoders, tmp_path):
    root, *_ = runs
    broken = tmp_path / "model"
    broken.mkdir()
    for name in ("labels.json", "model.safetensors"):
        (broken / name).write_bytes((root / "tuned" / "model" / name).read_bytes())
    payload = json.loads((root / "tuned" / "model" / "config.json").read_text())
    payload["speech_encoder"]["identity"] = "some-other-encoder"
    (broken / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ModelDirError, match="not the one the head was trained on"):
        load_model_dir(broken)


def test_finetuning_rejects_a_layer_subset_and_too_many_layers(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=4)
    with pytest.raises(ValueError, match="features.layers"):
        train(manifest, tmp_path / "a", load(None, _overrides(tiny_encoders, tmp_path / "cache", "features.layers=[0,1]",
                                                              "encoders.finetune_layers=1")), progress=False)
    with pytest.raises(ValueError, match="finetune_layers=3"):
        train(manifest, tmp_path / "b", load(None, _overrides(tiny_encoders, tmp_path / "cache",
                                                              "encoders.finetune_layers=3")), progress=False)


def test_an_ensemble_mixes_tuned_and_frozen_members(runs, tmp_path, monkeypatch):
    """Members on the same base encoder share its frozen computation (one encoder, one pass per batch in
    predict, one featurisation in evaluate); each head runs its own live layers."""
    import dmha.evaluation
    from dmha.ensemble import make_ensemble

    root, manifest, *_ = runs
    make_ensemble([root / "tuned" / "model", root / "frozen" / "model"], tmp_path / "ens")
    featurized = []
    real_features_for = dmha.evaluation.features_for
    monkeypatch.setattr(dmha.evaluation, "features_for", lambda *a, **k: featurized.append(1) or real_features_for(*a, **k))
    report = evaluate(tmp_path / "ens", manifest, "test", tmp_path / "eval", progress=False, report=False)
    assert report["n"] == 2 and len(featurized) == 1  # one set of frozen features for both members
    rec = EmotionRecognizer.load(tmp_path / "ens")
    assert len(rec._speech) == 1  # one frozen encoder object serves both members
    (encoder,) = rec._speech.values()
    encoded, live = [], []
    real_encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda waves: encoded.append(len(waves)) or real_encode(waves))
    tuned, frozen = (m.bundle.model for m in rec.members)
    assert tuned.top is not None and frozen.top is None
    tuned.top.register_forward_hook(lambda *_: live.append(1))
    items = [i for i in read_manifest(manifest) if i.split == "test"]
    preds = rec.predict([i.path for i in items], transcripts=[i.transcript for i in items], batch_size=2)
    assert len(preds) == 2 and all(abs(sum(p.probs.values()) - 1) < 1e-4 for p in preds)
    assert encoded == [2] and live == [1]  # one frozen pass over the batch; the tuned head's own top layers once
    assert set(preds[0].votes) == {m.name for m in rec.members}


@pytest.mark.slow
def test_onnx_export_carries_the_tuned_layers(runs, tmp_path):
    """The exported head recomputes the top states from the lower ones, as torch does (≤ 1e-4)."""
    import onnxruntime as ort

    from dmha.batches import collate
    from dmha.export import export_onnx
    from dmha.extraction import features_for

    root, manifest, *_ = runs
    export_onnx(root / "tuned" / "model", tmp_path / "head.onnx")
    bundle = load_model_dir(root / "tuned" / "model")
    data = features_for(read_manifest(manifest), bundle.config, norm=bundle.norm,
                     progress=False)
    batch = collate([{"speech": r.speech().float(), "text": r.text().float()} for r in data.refs[:5]])
    assert not batch["speech_mask"].all()  # padding is exercised
    reference = bundle.model.predict_proba(batch)[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {k: batch[k].numpy() for k in ("speech", "speech_mask", "text", "text_mask")})
    assert np.abs(probs - reference).max() <= 1e-4


def test_online_mode_trains_the_top_layer_on_augmented_audio(tiny_encoders, tmp_path):
    """Online augmentation: the frozen encoder runs every step, its top layer is recomputed and trained."""
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=4)
    metrics = train(manifest, tmp_path / "run", load(None, _overrides(
        tiny_encoders, tmp_path / "cache", "aug.enabled=true", "aug.p=1.0", "encoders.finetune_layers=1")),
        progress=False)
    assert metrics["feature_mode"] == "online"
    top = {k.removeprefix("top.layers.0."): v for k, v in
           load_file(str(tmp_path / "run" / "model" / "model.safetensors")).items() if k.startswith("top.layers.0.")}
    base = speech_encoder(load(None, _overrides(tiny_encoders, tmp_path / "cache")).encoders).model.encoder.layers[-1]
    assert any(not torch.allclose(v, base.state_dict()[k]) for k, v in top.items())
