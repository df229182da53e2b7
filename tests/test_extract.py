"""`dmha extract`: the store a 2-process extraction builds equals the single-process one."""
import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest import write_tone_corpus
from dmha.store import FeatureStore, read_header


def _extract(manifest, cache, tiny_encoders, processes):
    args = [sys.executable, "-m", "dmha.cli", "extract", "--manifest", str(manifest), "--processes", str(processes),
            "--set", f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "features.batch_size=3"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _stores(cache):
    return {kind: FeatureStore(next((cache / kind).iterdir())) for kind in ("speech", "text")}


@pytest.mark.slow
def test_two_process_extraction_builds_the_same_store(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=8)
    (tmp_path / "corpus" / "broken.wav").write_text("not audio")
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["broken.wav", "low", "train", "s9", "a broken file"])
    single = _extract(manifest, tmp_path / "single", tiny_encoders, 1)
    assert single.returncode == 3, single.stderr[-3000:]  # 3: an item was bad, the others extracted
    double = _extract(manifest, tmp_path / "double", tiny_encoders, 2)
    assert double.returncode == 3, double.stderr[-3000:]
    assert "features ready for 16 items (16 speech entries computed here)" in double.stdout
    assert "skipped 1 bad file(s)" in double.stderr and double.stderr.count("broken.wav: cannot decode") == 1
    # (listed once, among the skipped files; per-utterance normalisation reads no training statistics)
    one, two = _stores(tmp_path / "single"), _stores(tmp_path / "double")
    for kind in ("speech", "text"):
        assert sorted(one[kind].keys()) == sorted(two[kind].keys()) and len(one[kind]) == (16 if kind == "speech" else 2)
        for key in one[kind].keys():
            a, b = one[kind].get(key).float(), two[kind].get(key).float()
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-2, rtol=1e-2), (kind, (a - b).abs().max())  # fp16, other batches
    assert len(two["speech"].shard_paths()) >= 2  # each process wrote its own shards
    again = _extract(manifest, tmp_path / "double", tiny_encoders, 2)
    assert "(0 speech entries computed here)" in again.stdout  # resumed: nothing left to do


def test_a_damaged_shard_is_skipped_with_a_warning_and_its_entries_recomputed(tiny_encoders, tmp_path, caplog,
                                                                            monkeypatch):
    """docs/reference/robustness.md: a truncated shard is not fatal; the next extraction warns and recomputes
    exactly its entries, and every item has readable features again."""
    from dmha.config import load
    from dmha.experiment import extract

    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=3)
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={tmp_path / 'cache'}", "features.shard_mb=0.001"])
    first = extract(manifest, config, progress=False)
    assert first.speech_computed == 6
    speech = _stores(tmp_path / "cache")["speech"]
    shard = speech.shard_paths()[0]
    lost = len(read_header(shard)[0])
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated, e.g. by a full disk
    caplog.set_level("WARNING")
    from dmha import layout

    monkeypatch.setattr(layout, "_OPENED", {})  # a later process: the stores are opened afresh
    again = extract(manifest, config, progress=False)
    assert "skipping a damaged shard" in caplog.text and shard.name in caplog.text
    assert 1 <= lost < 6 and again.speech_computed == lost
    assert len(again.refs) == 6 and all(ref.speech().numel() > 0 for ref in again.refs)
