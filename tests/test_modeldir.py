"""A model directory travels: its head is rebuilt from recorded dimensions, the training machine's
settings are provenance only, and the previous format still loads."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from dmha.inference import EmotionRecognizer
from dmha.modeldir import FORMAT_VERSION, ModelDirError, load_model_dir


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, tone(300, 1.0, np.random.default_rng(1)), 16000)
    return path


def _rewrite(model_dir, edit):
    payload = json.loads((model_dir / "config.json").read_text())
    edit(payload)
    (model_dir / "config.json").write_text(json.dumps(payload))


def test_config_json_records_the_head_and_the_training_machine_apart(serve_model_dir):
    payload = json.loads((serve_model_dir / "config.json").read_text())
    assert payload["format_version"] == FORMAT_VERSION == 2
    bundle = load_model_dir(serve_model_dir)
    assert payload["head"] == dataclasses.asdict(bundle.model.dims) == {
        "speech_layers": bundle.speech.num_layers, "speech_dim": bundle.speech.dim, "text_dim": bundle.text.dim,
        "num_classes": len(bundle.labels)}
    assert set(payload["trained_on"]) == {"encoders.device", "train.accelerator", "train.devices", "train.num_nodes",
                                          "train.num_workers", "features.cache_dir"}


def test_a_model_trained_elsewhere_runs_where_it_is_loaded(serve_model_dir, clip, tmp_path):
    expected = EmotionRecognizer.load(serve_model_dir).predict(clip, transcript="")
    moved = tmp_path / "gpu_trained"
    shutil.copytree(serve_model_dir, moved)

    def from_a_gpu_cluster(payload):
        payload["config"]["encoders"]["device"] = "cuda:7"
        payload["config"]["train"].update(accelerator="gpu", devices=8, num_nodes=2, num_workers=16)
        payload["config"]["features"]["cache_dir"] = str(tmp_path / "scratch-on-the-cluster")  # not here
        payload["trained_on"] = {"encoders.device": "cuda:7", "train.devices": 8}

    _rewrite(moved, from_a_gpu_cluster)
    bundle = load_model_dir(moved)
    assert bundle.trained_on == {"encoders.device": "cuda:7", "train.devices": 8}  # kept as provenance
    assert (bundle.config.encoders.device, bundle.config.train.devices, bundle.config.train.num_nodes,
            bundle.config.train.num_workers, bundle.config.features.cache_dir) == ("cpu", 1, 1, 0, "")
    assert load_model_dir(moved, encoder_device=None).config.encoders.device in ("cpu", "cuda:7")  # cuda only if here
    got = EmotionRecognizer.load(moved, device="cpu").predict(clip, transcript="")  # cuda:7 would fail here
    assert got.label == expected.label and got.probs == pytest.approx(expected.probs, abs=1e-6)


def test_an_existing_cache_folder_is_kept_for_evaluation(serve_model_dir, tmp_path):
    here = tmp_path / "store"
    here.mkdir()
    moved = tmp_path / "m"
    shutil.copytree(serve_model_dir, moved)
    _rewrite(moved, lambda p: p["config"]["features"].update(cache_dir=str(here)))
    assert load_model_dir(moved).config.features.cache_dir == str(here)


def test_the_previous_format_still_loads(serve_model_dir, clip, tmp_path):
    expected = EmotionRecognizer.load(serve_model_dir).predict(clip, transcript="")
    old = tmp_path / "format1"
    shutil.copytree(serve_model_dir, old)

    def format_1(payload):
        payload["format_version"] = 1
        del payload["head"], payload["trained_on"]

    _rewrite(old, format_1)
    assert load_model_dir(old).trained_on["encoders.device"] == "cpu"  # derived from the training config
    got = EmotionRecognizer.load(old).predict(clip, transcript="")
    assert got.label == expected.label and got.probs == pytest.approx(expected.probs, abs=1e-6)


def test_a_head_that_does_not_match_its_labels_is_refused(serve_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(serve_model_dir, bad)
    _rewrite(bad, lambda p: p["head"].update(num_classes=5))
    with pytest.raises(ModelDirError, match="5 classes in the head, 2 labels"):
        load_model_dir(bad)
