"""`dmha cache info|verify|prune` on a small hand-built cache with damaged entries."""
import os
import time

import torch

from dmha.cli import main
from dmha.features import FeatureCache


def _cache(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    good = [cache.path("speech", "enc-a", f"{k:02d}aaaa") for k in range(3)]
    for path in good:
        FeatureCache.put(path, torch.randn(2, 5, 4))
    text = cache.path("text", "enc-b", "77bbbb")
    FeatureCache.put(text, torch.randn(3, 4))
    nan = cache.path("speech", "enc-a", "99nan")
    FeatureCache.put(nan, torch.full((2, 5, 4), float("nan")))
    broken = cache.path("speech", "enc-a", "88broken")
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    stale = good[0].parent / ".00aaaa.safetensors.x1.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = good[0].parent / ".00aaaa.safetensors.x2.tmp"  # a live writer's: left alone
    fresh.write_bytes(b"half")
    return cache.root, good, text, nan, broken, stale, fresh


def test_info_lists_each_encoder(tmp_path, capsys):
    root, *_ = _cache(tmp_path)
    assert main(["cache", "info", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "enc-a" in out and "enc-b" in out
    assert "5 entries" in out and "1 entries" in out  # 3 good + nan + broken; 1 text


def test_verify_finds_and_fixes_damage(tmp_path, capsys):
    root, good, text, nan, broken, stale, fresh = _cache(tmp_path)
    assert main(["cache", "verify", "--cache-dir", str(root)]) == 2
    captured = capsys.readouterr()
    assert f"corrupt: {broken}" in captured.err and f"stale temp file: {stale}" in captured.err
    assert str(nan) not in captured.err  # headers only without --deep
    assert str(fresh) not in captured.err
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep"]) == 2
    assert f"corrupt: {nan}: non-finite values" in capsys.readouterr().err
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep", "--fix"]) == 0
    assert not broken.exists() and not nan.exists() and not stale.exists() and fresh.exists()
    assert all(p.exists() for p in good) and text.exists()
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep"]) == 0
    assert "checked 4 entries: 0 corrupt, 0 stale" in capsys.readouterr().out


def test_prune_by_age_and_by_encoder(tmp_path, capsys):
    root, good, text, *_ = _cache(tmp_path)
    old = time.time() - 40 * 86400
    os.utime(good[1], (old, old))
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "30", "--dry-run"]) == 0
    assert "would remove 1 entries" in capsys.readouterr().out and good[1].exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "30"]) == 0
    assert not good[1].exists() and good[0].exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--encoder", "enc-b"]) == 0
    assert not text.exists() and not text.parent.parent.exists() and good[0].exists()
    assert main(["cache", "prune", "--cache-dir", str(root)]) == 1
    assert "say what to prune" in capsys.readouterr().err
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "nowhere")]) == 1
