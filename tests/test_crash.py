"""Crash safety: `kill -9` during extraction and training, then the same command again; full disks.

The killed process gets no chance to clean up, so what survives is exactly what the atomic writes
(temp file + rename) promise: finished shards and checkpoints, never half of one.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tone, write_tone_corpus
from dmha import cache_admin
from dmha.store import FeatureStore

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _corpus(root: Path, n: int, seconds: float) -> Path:
    """n labelled tones of `seconds` each, with given transcripts and a train/dev/test split."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        label = ("low", "high")[i % 2]
        sf.write(root / f"{i:03d}.wav", tone(200 + 150 * (i % 2) + i, seconds, rng), 16000)
        rows.append({"path": f"{i:03d}.wav", "label": label, "split": ("train", "train", "train", "dev", "test")[i % 5],
                     "transcript": f"clip {label}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def _dmha(*args) -> list[str]:
    return [sys.executable, "-m", "dmha.cli", *map(str, args)]


def _encoders(tiny_encoders, cache) -> list[str]:
    return [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}"]


def _kill_when(cmd: list[str], ready, timeout: float = 300) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` is true; fail if it ended by itself first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail(f"finished (rc {proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]!r}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _speech_store(cache: Path) -> FeatureStore:
    return FeatureStore(next((cache / "speech").iterdir()))


@pytest.mark.slow
def test_killed_extraction_resumes_from_its_finished_shards(tiny_encoders, tmp_path):
    manifest = _corpus(tmp_path / "corpus", 160, 6.0)
    cache = tmp_path / "cache"
    # Tiny shards (one entry each) so the kill lands between many finished shards.
    cmd = _dmha("extract", "--manifest", manifest, "--set", *_encoders(tiny_encoders, cache),
                "features.batch_size=2", "features.shard_mb=0.0001")
    shards = lambda: len(list((cache / "speech").glob("*/shards/*.safetensors"))) >= 6  # noqa: E731
    _kill_when(cmd, shards)
    kept = len(_speech_store(cache))
    assert 6 <= kept < 160
    report = cache_admin.verify(cache, deep=True, progress=False)
    assert report.corrupt == [] and report.stale_tmp == []  # at most a fresh temp file, never a bad shard
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"({160 - kept} speech entries computed here)" in again.stdout  # finished shards were reused
    ref = tmp_path / "uninterrupted"
    whole = subprocess.run(_dmha("extract", "--manifest", manifest, "--set", *_encoders(tiny_encoders, ref),
                                 "features.batch_size=2"), capture_output=True, text=True, env=ENV, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed, fresh = _speech_store(cache), _speech_store(ref)
    assert sorted(resumed.keys()) == sorted(fresh.keys())
    assert all(torch.equal(resumed.get(k), fresh.get(k)) for k in fresh.keys())  # same batches, same values


def _train_cmd(manifest, out, tiny_encoders, cache):
    return _dmha("train", "--manifest", manifest, "--out", out, "--set", *_encoders(tiny_encoders, cache),
                 "train.max_epochs=10", "train.early_stop_patience=20", "train.batch_size=4", "train.crop_s=0",
                 "model.hidden_layers=1", "seed=3")


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=10)
    cache, run, ref = tmp_path / "cache", tmp_path / "run", tmp_path / "ref"
    whole = subprocess.run(_train_cmd(manifest, ref, tiny_encoders, cache), capture_output=True, text=True,
                           env=ENV, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    seen: list[int] = []

    def after_three_epochs() -> bool:  # last.ckpt is rewritten at the end of every epoch
        if last.exists() and (not seen or last.stat().st_mtime_ns != seen[-1]):
            seen.append(last.stat().st_mtime_ns)
        return len(seen) >= 3

    _kill_when(_train_cmd(manifest, run, tiny_encoders, cache), after_three_epochs)
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]  # a whole checkpoint
    assert 1 <= epoch < 9
    assert not (run / "model").exists() and not list(run.glob(".model.*"))  # no half-written model dir
    again = subprocess.run([*_train_cmd(manifest, run, tiny_encoders, cache)[:3], "-v",
                            *_train_cmd(manifest, run, tiny_encoders, cache)[3:]],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stderr
    resumed, expected = (json.loads((d / "metrics.json").read_text()) for d in (run, ref))
    for key in ("macro_f1", "accuracy", "dev_macro_f1", "best_epoch", "per_class"):
        assert resumed[key] == expected[key], key  # random states travel with the checkpoint: bit-exact
    from dmha.inference import EmotionRecognizer

    assert EmotionRecognizer.load(run / "model").labels == ["high", "low"]


def test_full_disk_during_extraction_fails_cleanly(tiny_encoders, tmp_path, monkeypatch, capsys):
    """A writer that runs out of space: one-line error, no temp file, earlier shards intact."""
    import dmha.store as store_module
    from dmha.cli import main

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=4)
    cache = tmp_path / "cache"
    real, calls = store_module.save_file, []

    def filling_up(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 2:
            Path(path).write_bytes(b"partial")  # what a full disk leaves behind
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(store_module, "save_file", filling_up)
    code = main(["extract", "--manifest", str(manifest), "--set", *_encoders(tiny_encoders, cache),
                 "features.batch_size=2", "features.shard_mb=0.0001"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "cannot write a feature shard (No space left on device)" in err
    assert err.startswith("dmha extract: error: ") and str(cache) in err
    assert not list(cache.rglob("*.tmp"))
    assert len(_speech_store(cache)) == 2  # the two shards written before the disk filled up
    assert cache_admin.verify(cache, deep=True, progress=False).ok


def _file_size_limit(limit_bytes: int):
    """preexec_fn: files may not grow past `limit_bytes` (RLIMIT_FSIZE), and a write past it fails
    with EFBIG instead of killing the process (SIGXFSZ ignored): a real, kernel-refused write that
    needs no root and no mount, so it runs everywhere."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_refused_write_during_extraction_fails_cleanly(tiny_encoders, tmp_path):
    """The kernel refuses a shard write part-way (file size limit): one-line error naming the store,
    no temp file, the shards written before intact and verified."""
    manifest = _corpus(tmp_path / "corpus", 12, 4.0)
    cache = tmp_path / "cache"
    run = subprocess.run(_dmha("extract", "--manifest", manifest, "--set", *_encoders(tiny_encoders, cache),
                               "features.batch_size=2", "features.shard_mb=0.5"),
                         capture_output=True, text=True, env=ENV, timeout=600, preexec_fn=_file_size_limit(300_000))
    assert run.returncode == 1, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("dmha extract: error: ") and "cannot write a feature shard (File too large" in last
    assert str(cache) in last and "finished shards are kept" in last
    assert not list(cache.rglob("*.tmp"))
    assert cache_admin.verify(cache, deep=True, progress=False).ok


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 300 kB tmpfs (needs root and mount permission); skipped with a message otherwise (the
    file-size-limit test above always runs a kernel-refused write)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the patched-writer test covers it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_really_full_disk_fails_cleanly(tiny_encoders, tmp_path, tiny_tmpfs):
    manifest = _corpus(tmp_path / "corpus", 12, 4.0)
    cache = tiny_tmpfs / "cache"
    run = subprocess.run(_dmha("extract", "--manifest", manifest, "--set", *_encoders(tiny_encoders, cache),
                               "features.batch_size=2", "features.shard_mb=0.0001"),
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("dmha extract: error: ") and "No space left on device" in last
    assert not list(cache.rglob("*.tmp"))
    assert cache_admin.verify(cache, deep=True, progress=False).ok
