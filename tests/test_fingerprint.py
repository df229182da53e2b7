"""Encoder fingerprints by content: the same weights give one identity on every machine, other weights
another, and a model warns (saying what to do) only when its encoder really differs."""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest

from conftest import build_tiny_speech_encoder, train_tiny_model
from dmha.encoders import clear_cache, load_speech_encoder
from dmha.encoders.fingerprint import Identity, dir_fingerprint, file_sha256, mismatch, same_encoder, weights_id
from dmha.pretrained import bundled

HOUR_NS = 3600 * 10**9


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """A fresh dmha home per test (digest cache, assembled models): a new machine, every time."""
    import dmha.encoders.fingerprint as fingerprint

    monkeypatch.setenv("DMHA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fingerprint, "_MEMO", {})
    clear_cache()
    yield
    clear_cache()


def touch_all(folder: Path, shift_ns: int) -> None:
    """Move every file's access and modification time by `shift_ns`, as a copy or a reinstall does."""
    for file in folder.rglob("*"):
        st = file.stat()
        os.utime(file, ns=(st.st_atime_ns + shift_ns, st.st_mtime_ns + shift_ns))


def change_one_weight(safetensors: Path) -> None:
    """Flip one byte of the tensor data (after the header), keeping the size and the modification time."""
    st = safetensors.stat()
    data = bytearray(safetensors.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]  # the 8-byte header length, then the JSON header
    data[start + (len(data) - start) // 2] ^= 0x40
    safetensors.write_bytes(bytes(data))
    os.utime(safetensors, ns=(st.st_atime_ns, st.st_mtime_ns))  # an mtime-only scheme would miss it


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return build_tiny_speech_encoder(tmp_path_factory.mktemp("fingerprint") / "speech")


def test_a_copied_and_touched_encoder_keeps_its_identity(encoder_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(encoder_dir, copy)
    touch_all(copy, -5 * HOUR_NS)
    assert dir_fingerprint(copy) == dir_fingerprint(encoder_dir)
    assert dir_fingerprint(copy).startswith("content-")
    before = load_speech_encoder(str(copy)).info.identity
    touch_all(copy, 2 * HOUR_NS)
    clear_cache()
    assert load_speech_encoder(str(copy)).info.identity == before


def test_changed_weights_change_the_identity(encoder_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(encoder_dir, copy)
    before = weights_id("hf", copy, label="tiny")
    change_one_weight(copy / "model.safetensors")
    after = weights_id("hf", copy, label="tiny")
    assert after != before and Identity.parse(after).encoder == Identity.parse(before).encoder
    assert "with other weights" in mismatch(after, before)


def test_a_file_is_hashed_once_per_version(encoder_dir, tmp_path, monkeypatch):
    import hashlib

    weights = encoder_dir / "model.safetensors"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert file_sha256(weights) == expected
    assert len(list((tmp_path / "home" / "digests").iterdir())) == 1  # kept for the next process

    import dmha.encoders.fingerprint as fingerprint

    monkeypatch.setattr(fingerprint, "_MEMO", {})  # a new process: the cached digest, no read
    monkeypatch.setattr(hashlib, "file_digest", lambda *a: pytest.fail("read the file again"))
    assert file_sha256(weights) == expected


def test_an_unwritable_cache_still_gives_the_digest(encoder_dir, tmp_path, monkeypatch):
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("DMHA_HOME", str(tmp_path / "not_a_folder"))
    weights = encoder_dir / "model.safetensors"
    import hashlib

    assert file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_old_fingerprints_are_compared_without_their_weights():
    stored = "ct2-whisper:whisper-base@4a1035e1d4f19ad2|pad_to_s=0|window_frames=3000"  # size/mtime era
    here = "ct2-whisper:whisper-base@content-35cb4f00a844e475|pad_to_s=0|window_frames=3000"
    assert Identity.parse(stored).legacy and not Identity.parse(here).legacy
    assert same_encoder(here, stored)
    assert not same_encoder(here.replace("pad_to_s=0", "pad_to_s=30"), stored)
    assert "other settings" in mismatch(here.replace("pad_to_s=0", "pad_to_s=30"), stored)
    assert not same_encoder(here.replace("whisper-base", "whisper-tiny.en"), stored)
    assert not same_encoder(here, here.replace("35cb", "0000"))  # two content fingerprints: compared
    assert same_encoder("none", "none") and not same_encoder("none", "hf-text:minilm@content-1|max_length=512")


def test_bundled_models_store_what_a_fresh_install_computes():
    from dmha.encoders.packaged import whisper_base_dir

    try:
        fresh = whisper_base_dir()  # assembled now, into this test's empty home: a new mtime
    except FileNotFoundError as err:
        pytest.skip(str(err))
    models = bundled()
    assert models, "no bundled model"
    for name, folder in models.items():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert config["config"]["encoders"]["speech"] == "whisper-base", name
        stored = Identity.parse(config["speech_encoder"]["identity"])
        assert not stored.legacy and stored.weights == dir_fingerprint(fresh), name


@pytest.mark.slow
def test_the_default_model_does_not_warn_on_a_fresh_install(caplog):
    """`EmotionRecognizer()` as on a new machine: Whisper base assembled anew, no identity warning."""
    from dmha.inference import EmotionRecognizer

    with caplog.at_level(logging.WARNING, logger="dmha"):
        EmotionRecognizer()
    assert "not the one the model was trained with" not in caplog.text


def test_the_warning_fires_with_advice_only_when_the_weights_differ(tiny_encoders, tmp_path, caplog):
    from dmha.inference import EmotionRecognizer

    speech = tmp_path / "speech"
    shutil.copytree(tiny_encoders["speech"], speech)
    model = train_tiny_model(tmp_path / "m", {**tiny_encoders, "speech": str(speech)})
    warning = "not the one the model was trained with"
    with caplog.at_level(logging.WARNING, logger="dmha"):
        EmotionRecognizer.load(model)
        touch_all(speech, HOUR_NS)  # reinstalled, same bytes
        clear_cache()
        EmotionRecognizer.load(model)
    assert warning not in caplog.text

    change_one_weight(speech / "model.safetensors")
    clear_cache()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dmha"):
        EmotionRecognizer.load(model)
    (message,) = [r.getMessage() for r in caplog.records if warning in r.getMessage()]
    assert "speech encoder" in message and "with other weights" in message
    assert "at training" in message and "retrain" in message and "package version" in message
