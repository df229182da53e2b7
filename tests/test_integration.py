"""Integration on the embedded encoders and real RAVDESS audio (slow; run in CI, skip without ../shared)."""
import json

import pytest

from conftest import require_ravdess
from dmha.config import load
from dmha.data.ravdess import prepare_ravdess
from dmha.encoders import load_speech_encoder, load_text_encoder
from dmha.experiment import train
from dmha.audio import WaveNorm
from dmha.inference import EmotionRecognizer
from dmha.modeldir import EncoderSpec, ModelBundle, build_model, head_dims, save_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ravdess_manifest(tmp_path_factory):
    data = require_ravdess()
    out = tmp_path_factory.mktemp("ravdess") / "manifest.csv"
    prepare_ravdess(data, out)
    return out


def _spec(info):
    return EncoderSpec(info.name, info.identity, info.num_layers, info.dim)


def test_embedded_encoders_batched_predict_equals_batch_of_one(tmp_path):
    """An untrained head on the real Whisper base + MiniLM: batch 4 gives batch 1's probabilities."""
    data = require_ravdess()
    config = load()
    speech, text = load_speech_encoder("whisper-base"), load_text_encoder("minilm")
    assert (speech.info.num_layers, speech.info.dim, text.info.dim) == (7, 512, 384)
    model = build_model(config, head_dims(_spec(speech.info), _spec(text.info), 8), _spec(speech.info)).eval()
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    save_model_dir(tmp_path / "model", ModelBundle(model, config, labels, _spec(speech.info), _spec(text.info),
                                                   WaveNorm(0.0, 0.05), {}))
    rec = EmotionRecognizer.load(tmp_path / "model")
    files = sorted((data / "audio" / "Actor_02").glob("*.flac"))[:6]
    texts = ["Kids are talking by the door"] * len(files)
    one = rec.predict(files, transcripts=texts, batch_size=1)
    many = rec.predict(files, transcripts=texts, batch_size=4)
    worst = max(abs(a.probs[k] - b.probs[k]) for a, b in zip(one, many) for k in labels)
    assert worst <= 1e-4, worst
    assert [a.label for a in one] == [b.label for b in many]


def test_the_default_recipe_on_ravdess_beats_chance_by_far_alone_and_grouped(ravdess_manifest, tmp_path):
    """The default recipe (no config file: the defaults users get) on the speaker-independent split,
    scored with each test clip alone (the headline) and grouped by test speaker."""
    config = load(None, [f"features.cache_dir={tmp_path.parent / 'rav_cache'}"])  # only where the store lives
    metrics = train(ravdess_manifest, tmp_path / "run", config, progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["n"] == 240 and saved["test_grouped"]["n"] == 240
    # chance is 0.125; measured on a 2-core EPYC: see docs/development/tests.md
    assert metrics["macro_f1"] > 0.5, metrics["macro_f1"]  # each test clip alone: the headline
    assert metrics["test_grouped"]["macro_f1"] > 0.5, metrics["test_grouped"]["macro_f1"]
