"""EmotionRecognizer.from_pretrained: local directories and Hub repositories, offline from a hub cache."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmha.cli import main
from dmha.ensemble import make_ensemble
from dmha.hub import looks_like_repo_id, resolve_model
from dmha.inference import EmotionRecognizer
from dmha.modeldir import ModelDirError

from conftest import tone

COMMIT = "a" * 40
OTHER = "b" * 40


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network: the Hub client's offline switch, as HF_HUB_OFFLINE=1 sets it."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def publish_to_cache(cache: Path, repo_id: str, model_dir: Path, commit: str, refs: tuple[str, ...] = ("main",)):
    """Lay a model directory out as the Hugging Face cache holds a downloaded repository
    (blobs named by content, snapshot files linking to them, refs naming the commit)."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    sf.write(path, tone(400, 1.0, np.random.default_rng(0)), 16000)
    return path


def test_repo_ids_and_paths_are_told_apart():
    assert looks_like_repo_id("my-lab/dmha-ravdess") and looks_like_repo_id("a.b/c_d-1")
    for path in ("model", "./model", "/abs/model", "runs/x/model", "../x", "a/..", "owner/", "/owner"):
        assert not looks_like_repo_id(path), path


def test_a_local_directory_loads_as_with_load(serve_model_dir, clip):
    expected = EmotionRecognizer.load(serve_model_dir).predict(clip, transcript="")
    got = EmotionRecognizer.from_pretrained(serve_model_dir).predict(clip, transcript="")
    assert got.label == expected.label and got.probs == expected.probs
    with pytest.raises(ModelDirError, match="revision only applies"):
        resolve_model(serve_model_dir, revision="main")


def test_a_hub_repository_loads_offline_from_the_cache(serve_model_dir, clip, tmp_path):
    cache = tmp_path / "hub"
    publish_to_cache(cache, "lab/tone", serve_model_dir, COMMIT, refs=("main", "v1"))
    expected = EmotionRecognizer.load(serve_model_dir).predict(clip, transcript="")
    for revision in (None, "main", "v1", COMMIT):
        rec = EmotionRecognizer.from_pretrained("lab/tone", revision=revision, cache_dir=cache)
        got = rec.predict(clip, transcript="")
        assert got.label == expected.label and got.probs == expected.probs, revision
    assert resolve_model("lab/tone", cache_dir=cache) == (cache / "models--lab--tone" / "snapshots" / COMMIT).resolve()


def test_a_revision_picks_its_own_snapshot(serve_model_dir, tmp_path):
    cache, changed = tmp_path / "hub", tmp_path / "changed"
    shutil.copytree(serve_model_dir, changed)
    (changed / "labels.json").write_text(json.dumps(["grave", "acute"]))  # same weights, other label names
    publish_to_cache(cache, "lab/tone", serve_model_dir, COMMIT, refs=("main",))
    publish_to_cache(cache, "lab/tone", changed, OTHER, refs=("v2",))
    original = json.loads((serve_model_dir / "labels.json").read_text())
    assert EmotionRecognizer.from_pretrained("lab/tone", cache_dir=cache).labels == original
    assert EmotionRecognizer.from_pretrained("lab/tone", "v2", cache_dir=cache).labels == ["grave", "acute"]
    assert EmotionRecognizer.from_pretrained("lab/tone", OTHER, cache_dir=cache).labels == ["grave", "acute"]


def test_an_ensemble_repository_loads_with_its_members(tiny_encoders, serve_model_dir, clip, tmp_path):
    ensemble = tmp_path / "ens"
    make_ensemble([serve_model_dir, serve_model_dir], ensemble)
    cache = tmp_path / "hub"
    publish_to_cache(cache, "lab/tone-ensemble", ensemble, COMMIT)
    rec = EmotionRecognizer.from_pretrained("lab/tone-ensemble", cache_dir=cache)
    assert len(rec.members) == 2
    assert rec.predict(clip, transcript="").votes is not None


def test_what_cannot_be_found_offline_is_one_line(serve_model_dir, tmp_path):
    cache = tmp_path / "hub"
    publish_to_cache(cache, "lab/tone", serve_model_dir, COMMIT)
    with pytest.raises(ModelDirError, match=r"^lab/other: not a local directory, and not in the Hugging Face cache"):
        EmotionRecognizer.from_pretrained("lab/other", cache_dir=cache)
    with pytest.raises(ModelDirError, match=r"^lab/tone@nope: ") as err:
        EmotionRecognizer.from_pretrained("lab/tone", revision="nope", cache_dir=cache)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelDirError, match="missing"):  # a path is a path: load says what is wrong with it
        EmotionRecognizer.from_pretrained(tmp_path / "nothing")


def test_cli_predict_and_serve_name_a_hub_repository(serve_model_dir, clip, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    publish_to_cache(cache, "lab/tone", serve_model_dir, COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert main(["predict", "lab/tone", str(clip), "--no-asr", "--format", "jsonl"]) == 0
    local = json.loads(capsys.readouterr().out.splitlines()[0])
    assert main(["predict", str(serve_model_dir), str(clip), "--no-asr", "--format", "jsonl"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == local
    assert main(["predict", "lab/missing", str(clip), "--no-asr"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmha predict: error: lab/missing: not a local directory") and "\n" not in err
