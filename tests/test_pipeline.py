"""train → model directory → evaluate → predict, end to end on tiny random-init encoders."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf

from conftest import write_tone_corpus
from helpers import assert_batch_invariant
from dmha.cli import main
from dmha.config import load
from dmha.data.manifest import read_manifest
from dmha.evaluation import evaluate
from dmha.experiment import train
from dmha.batches import collate, crop_or_repeat
from dmha.layout import StoreRoot
from dmha.store import FeatureStore
from dmha.inference import EmotionRecognizer
from dmha.modeldir import load_model_dir


def _config(tiny_encoders, cache, *extra):
    return load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                       f"features.cache_dir={cache}", "train.max_epochs=3", "train.batch_size=4",
                       "model.hidden_layers=1", "train.crop_s=0.5", *extra])


@pytest.fixture(scope="module")
def trained(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    manifest = write_tone_corpus(root / "corpus")
    config = _config(tiny_encoders, root / "cache")
    metrics = train(manifest, root / "run", config, progress=False)
    return root, manifest, config, metrics


def test_train_writes_model_dir_and_metrics(trained):
    root, _, _, metrics = trained
    model_dir = root / "run" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["calibration.json", "config.json", "labels.json",
                                                         "model.safetensors", "training_log.csv"]
    saved = json.loads((root / "run" / "metrics.json").read_text())
    for key in ("macro_f1", "accuracy", "uar", "per_class", "n", "dev_macro_f1", "best_epoch"):
        assert key in saved
    assert saved["split"] == "test" and saved["n"] == 2 and 0 <= saved["macro_f1"] <= 1
    assert (root / "run" / "eval_test" / "confusion.png").exists()
    bundle = load_model_dir(model_dir)
    assert bundle.labels == ["high", "low"] and bundle.norm.std > 0


def test_second_train_reuses_cached_features(trained, tiny_encoders):
    root, manifest, config, first = trained
    assert first["features_computed"] == 12
    again = train(manifest, root / "run2", config, progress=False)
    assert again["features_computed"] == 0


def test_seeded_training_is_reproducible(trained):
    root, manifest, config, first = trained
    again = train(manifest, root / "run3", config, progress=False)
    assert again["dev_macro_f1"] == first["dev_macro_f1"]
    assert again["per_class"] == first["per_class"]


def test_evaluate_and_predict_agree(trained, tmp_path):
    root, manifest, _, _ = trained
    report = evaluate(root / "run" / "model", manifest, "test", tmp_path / "eval", progress=False)
    assert report["n"] == 2 and (tmp_path / "eval" / "metrics.json").exists()
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.index("each clip alone") < page.index("grouped by speaker (transductive")  # the headline first
    assert (tmp_path / "eval" / "confusion.csv").exists() and (tmp_path / "eval" / "confusion.png").exists()
    rec = EmotionRecognizer.load(root / "run" / "model")
    items = [i for i in read_manifest(manifest) if i.split == "test"]
    import csv

    def evaluated(folder):
        with open(folder / "predictions.csv") as f:
            return {row["path"]: {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")} for row in csv.DictReader(f)}

    # evaluate's headline scores each clip alone, as predict of one file does
    alone = evaluated(tmp_path / "eval")
    for pred in rec.predict([i.path for i in items], transcripts=[i.transcript for i in items]):
        # evaluate reads fp16-cached features, predict runs the encoders live in fp32
        assert abs(pred.probs[pred.label] - alone[pred.path][pred.label]) < 1e-2
    # grouped (feature_norm=speaker): each test clip normalised by its speaker's test clips, as predict with
    # the speaker enrolled
    grouped = evaluated(tmp_path / "eval" / "grouped")
    assert report["grouped"]["n"] == 2
    for who in sorted({i.speaker for i in items}):
        mine = [i for i in items if i.speaker == who]
        profile = rec.enrol([i.path for i in mine])
        for pred in rec.predict([i.path for i in mine], transcripts=[i.transcript for i in mine], speaker=profile):
            assert abs(pred.probs[pred.label] - grouped[pred.path][pred.label]) < 1e-2


def test_batched_predict_equals_batch_of_one(trained):
    root, manifest, _, _ = trained
    rec = EmotionRecognizer.load(root / "run" / "model")
    assert_batch_invariant(rec, read_manifest(manifest)[:6])


def test_predict_from_array_and_attention(trained):
    root, manifest, _, _ = trained
    rec = EmotionRecognizer.load(root / "run" / "model")
    item = read_manifest(manifest)[0]
    wave, sr = sf.read(item.path, dtype="float32")
    stereo = np.stack([wave, wave], axis=1)
    pred = rec.predict(stereo, sample_rate=sr, transcript=item.transcript, return_attention=True)
    ref = rec.predict(item.path, transcript=item.transcript)
    assert pred.label == ref.label and abs(pred.probs[pred.label] - ref.probs[ref.label]) < 1e-4
    t = pred.attention["first"].shape[-1]
    assert pred.attention["first"].shape[0] == 4 and pred.attention["pooling"].shape == (t,)
    assert np.allclose(pred.attention["first"].sum(-1), 1, atol=1e-4)


def test_cli_predict_skips_bad_files(trained, tmp_path, capsys):
    root, manifest, _, _ = trained
    good = read_manifest(manifest)[0]
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    code = main(["predict", str(root / "run" / "model"), str(good.path), str(bad), "--format", "jsonl",
                 "--transcript", "hello", "--transcript", "hello"])
    out, err = capsys.readouterr()
    assert code == 3  # a bad file: the good one predicted, the bad one listed
    record = json.loads(out.strip().splitlines()[0])
    assert set(record) == {"path", "label", "probs", "transcript"} and record["transcript"] == "hello"
    assert "skipped 1 bad file" in err and "empty.wav" in err
    assert main(["predict", str(root / "run" / "model"), str(bad), "--strict", "--transcript", "x"]) == 3


def test_train_rejects_malformed_manifest_before_work(tiny_encoders, tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "c")
    text = manifest.read_text().replace(",dev,", ",val,")
    manifest.write_text(text)
    code = main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "run"),
                 "--set", f"encoders.speech={tiny_encoders['speech']}"])
    assert code == 1
    assert "dev" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()


def test_subvector_and_focal_train(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=4)
    config = _config(tiny_encoders, tmp_path / "cache", "model.attention=subvector", "loss=focal",
                     "train.max_epochs=1")
    metrics = train(manifest, tmp_path / "run", config, progress=False)
    assert load_model_dir(tmp_path / "run" / "model").config.model.attention == "subvector"
    assert 0 <= metrics["macro_f1"] <= 1
    item = read_manifest(manifest)[0]
    pred = EmotionRecognizer.load(tmp_path / "run" / "model").predict(item.path, transcript=item.transcript,
                                                                      return_attention=True)
    heads, t = pred.attention["first"].shape  # per-head weights over the T speech frames + text tokens
    assert heads == 4 and pred.attention["pooling"].shape == (4,) and t > int(pred.attention["speech_frames"])
    assert np.allclose(pred.attention["first"].sum(-1), 1, atol=1e-4)


def test_crop_or_repeat_and_collate_masks():
    import torch

    h = torch.arange(5.0).view(1, 5, 1)
    assert crop_or_repeat(h, 12, 0)[0, :, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert crop_or_repeat(h, 3, 2)[0, :, 0].tolist() == [2, 3, 4]
    batch = collate([{"speech": torch.ones(2, 3, 4), "text": torch.ones(2, 5)},
                     {"speech": torch.ones(2, 1, 4), "text": torch.ones(4, 5)}])
    assert batch["speech"].shape == (2, 2, 3, 4) and batch["speech_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["text_mask"].sum().item() == 6


def test_cache_stores_fp16_shards_per_encoder(tmp_path):
    import torch

    cache = StoreRoot(tmp_path)
    store = cache.store("speech", "enc")
    assert cache.store("speech", "enc") is store and cache.store("text", "enc") is not store
    with store.writer() as writer:
        writer.put("ab" * 32, torch.randn(2, 3, 4))
    assert store.get("ab" * 32).dtype == torch.float16
    assert not list(store.shard_dir.glob(".*.tmp")) and len(store.shard_paths()) == 1


def test_run_dir_with_another_config_is_not_resumed(trained):
    root, manifest, config, _ = trained
    other = _config_like(config, "model.heads=2")
    with pytest.raises(ValueError, match="different config"):
        train(manifest, root / "run", other, progress=False)


def _config_like(config, *overrides):
    from dmha.config import from_dict, to_dict, _apply_override

    raw = to_dict(config)
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw)


def test_layer_subset_is_stored_trained_and_predicted(trained, tiny_encoders, tmp_path):
    """features.layers keeps only the listed hidden states: in the cache, the head and live prediction."""
    root, manifest, _, _ = trained
    config = _config(tiny_encoders, root / "cache", "features.layers=[0, 2]")
    metrics = train(manifest, tmp_path / "run", config, progress=False)
    assert metrics["features_computed"] == 12  # a new cache identity: full-stack entries are not reused
    bundle = load_model_dir(tmp_path / "run" / "model")
    assert bundle.speech.num_layers == 2 and bundle.model.layer_sum.logits.shape == (2,)
    assert "|layers=0,2" in bundle.speech.identity
    speech_dir = next(p for p in (root / "cache" / "speech").iterdir()
                      if "|layers=0,2" in (p / "encoder.json").read_text())
    store = FeatureStore(speech_dir)
    assert len(store) == 12 and all(store.get(key).shape[0] == 2 for key in store.keys())
    rec = EmotionRecognizer.load(tmp_path / "run" / "model")
    item = [i for i in read_manifest(manifest) if i.split == "test"][0]
    assert rec.predict(item.path, transcript=item.transcript).label in bundle.labels
    with pytest.raises(ValueError, match=r"hidden states 0-2"):
        train(manifest, tmp_path / "bad", _config(tiny_encoders, root / "cache", "features.layers=[5]"), progress=False)
    from dmha.config import ConfigError

    for bad in ("features.layers=[-1]", "features.layers=[1, 1]"):
        with pytest.raises(ConfigError, match="features.layers"):
            _config(tiny_encoders, root / "cache", bad)


def test_lr_halves_after_patience_epochs_without_dev_gain(trained, tiny_encoders, tmp_path):
    """The separable corpus reaches dev macro-F1 1.0 at once, so every later epoch is 'without gain'."""
    root, manifest, _, _ = trained
    config = _config(tiny_encoders, root / "cache", "train.max_epochs=6", "train.lr_patience=2",
                     "train.early_stop_patience=10", "train.lr=0.001")
    train(manifest, tmp_path / "run", config, progress=False)
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr")]
    f1 = [float(r["val_macro_f1"]) for r in rows]
    lrs = [float(r["lr"]) for r in rows]
    assert len(lrs) == 6
    expected, lr, best, bad = [], 0.001, -1.0, 0  # "halve after 2 epochs without gain"
    for score in f1:
        if score > best * (1 + 1e-4):
            best, bad = score, 0
        else:
            bad += 1
        if bad >= 2:
            lr, bad = lr / 2, 0
        expected.append(lr)
    assert lrs == pytest.approx(expected) and min(lrs) < 0.001  # it did halve, on schedule


def test_training_logs_to_tensorboard_when_asked(tiny_encoders, tmp_path):
    """train.logger=tensorboard: TensorBoard event files beside the CSV log (which reports read)."""
    from helpers import train_tone_model

    model_dir = train_tone_model(tiny_encoders, tmp_path, "train.logger=tensorboard")
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file() and (model_dir / "training_log.csv").is_file()
    with pytest.raises(Exception, match="train.logger must be one of csv, tensorboard"):
        from dmha.config import load

        load(None, ["train.logger=wandb"])
