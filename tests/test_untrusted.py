"""Untrusted files: nothing dmha loads from a model, run or encoder directory can run code."""
import json
import os
import shutil

import pytest
import torch

from conftest import write_tone_corpus
from dmha.config import ConfigError, load
from dmha.encoders import load_speech_encoder, load_text_encoder
from dmha.encoders.registry import clear_cache
from dmha.modeldir import ModelDirError, load_model_dir
from dmha.trust import ENV, UntrustedFileError


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(path, marker):
    torch.save({"state_dict": _Payload(marker), "epoch": 0}, path)


@pytest.fixture(scope="module")
def model_dir(tiny_encoders, tmp_path_factory):
    from dmha.experiment import train

    root = tmp_path_factory.mktemp("untrusted")
    manifest = write_tone_corpus(root / "corpus")
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                         "model.hidden_layers=1", "train.crop_s=0"])
    train(manifest, root / "run", config, progress=False)
    return root / "run" / "model", manifest, config


def test_a_pickle_posing_as_model_weights_is_not_executed(model_dir, tmp_path):
    source, _, _ = model_dir
    bad = tmp_path / "model"
    shutil.copytree(source, bad)
    marker = tmp_path / "pwned"
    _evil(bad / "model.safetensors", marker)
    with pytest.raises(ModelDirError, match="model.safetensors"):
        load_model_dir(bad)
    assert not marker.exists()


def test_pickle_files_beside_a_model_are_never_read(model_dir, tmp_path):
    source, _, _ = model_dir
    dirty = tmp_path / "model"
    shutil.copytree(source, dirty)
    marker = tmp_path / "pwned"
    for name in ("pytorch_model.bin", "model.pkl", "model.ckpt", "thresholds.pkl"):
        _evil(dirty / name, marker)
    assert load_model_dir(dirty).labels == ["high", "low"]
    assert not marker.exists()


def test_a_malicious_checkpoint_does_not_run_on_resume(model_dir, tmp_path, tiny_encoders, capsys):
    from dmha.cli import main

    _, manifest, _ = model_dir
    run = tmp_path / "run"
    args = ["train", "--manifest", str(manifest), "--out", str(run), "--set",
            f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
            "model.hidden_layers=1", "train.crop_s=0"]
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"
    _evil(run / "checkpoints" / "last.ckpt", marker)
    code = main(args)  # in this process: the pickle would run here, and the marker would say so
    assert code == 1 and not marker.exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("dmha train: error:") and "weights" in last.lower()  # weights_only refused it


def _pickle_only_encoder(source, target, marker=None):
    shutil.copytree(source, target)
    (target / "model.safetensors").unlink()
    if marker is None:
        from transformers import AutoModel

        torch.save(AutoModel.from_pretrained(source).state_dict(), target / "pytorch_model.bin")
    else:
        _evil(target / "pytorch_model.bin", marker)
    return target


def test_encoders_with_only_pickle_weights_need_allow_pickle(tiny_encoders, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.delenv(ENV, raising=False)
    clear_cache()
    benign = _pickle_only_encoder(Path(tiny_encoders["speech"]), tmp_path / "speech")
    with pytest.raises(UntrustedFileError, match="--allow-pickle") as err:
        load_speech_encoder(str(benign))
    assert "pytorch_model.bin" in str(err.value) and "\n" not in str(err.value)
    text = _pickle_only_encoder(Path(tiny_encoders["text"]), tmp_path / "text")
    with pytest.raises(UntrustedFileError):
        load_text_encoder(str(text))
    monkeypatch.setenv(ENV, "1")  # what --allow-pickle sets: the user vouches for these files
    assert load_speech_encoder(str(benign)).info.num_layers == 3
    marker = tmp_path / "pwned"
    evil = _pickle_only_encoder(Path(tiny_encoders["speech"]), tmp_path / "evil", marker)
    with pytest.raises(Exception):  # even when allowed, transformers unpickles with weights_only=True
        load_speech_encoder(str(evil))
    assert not marker.exists()
    clear_cache()


def test_allow_pickle_is_a_command_line_choice_not_a_file_setting(tiny_encoders, tmp_path, model_dir):
    """A model's config.json cannot switch it on: unknown keys are refused."""
    source, _, _ = model_dir
    bad = tmp_path / "model"
    shutil.copytree(source, bad)
    payload = json.loads((bad / "config.json").read_text())
    payload["config"]["encoders"]["allow_pickle"] = True
    (bad / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ModelDirError, match="allow_pickle"):
        load_model_dir(bad)
    from dmha.cli import _parser

    assert "--allow-pickle" in _parser().format_help()


@pytest.mark.parametrize("override, key", [
    ("train.lr=0", "train.lr"), ("train.lr=-1", "train.lr"), ("train.batch_size=0", "train.batch_size"),
    ("train.lr_factor=1.5", "train.lr_factor"), ("train.lr_factor=0", "train.lr_factor"),
    ("model.dropout=1.0", "model.dropout"), ("model.heads=0", "model.heads"), ("model.attention=cross", "model.attention"),
    ("loss=mse", "loss"), ("aug.p=1.5", "aug.p"), ("aug.snr_db_min=20", "aug.snr"), ("train.max_epochs=1.5", "train.max_epochs"),
    ("train.precision=fp8", "train.precision"), ("features.layers=[1, 1]", "features.layers"),
    ("features.shard_mb=0", "features.shard_mb"), ("encoders.asr_window_s=60", "encoders.asr_window_s"),
    ("seed=abc", "seed"), ("train.bogus=1", "train.bogus"), ("nosection.key=1", "nosection"),
    ("train.focal_gamma=-1", "train.focal_gamma"), ("decision.prior=weird", "decision.prior"),
    ("train.length_buckets=3", "train.length_buckets"), ("train.devices=0", "train.devices"),
    # negative values of every kind the docs name, and of the recipe options
    ("train.batch_size=-4", "train.batch_size"), ("model.heads=-2", "model.heads"), ("train.devices=-1", "train.devices"),
    ("features.shard_mb=-1", "features.shard_mb"), ("train.crop_s=-1", "train.crop_s"),
    ("model.dim=-128", "model.dim"), ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.layer_lr=-1", "train.layer_lr"), ("train.frame_dropout=-0.1", "train.frame_dropout"),
    ("train.label_smoothing=-0.1", "train.label_smoothing"), ("train.ema_decay=-0.5", "train.ema_decay"),
    ("train.ema_decay=1", "train.ema_decay"), ("train.frame_dropout=1", "train.frame_dropout"),
])
def test_bad_config_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load(None, [override])
    assert "\n" not in str(err.value)
