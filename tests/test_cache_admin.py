"""`dmha cache info|verify|prune` on a small hand-built store with damaged shards."""
import os
import time

import torch

from dmha.cli import main
from dmha.layout import StoreRoot


def _cache(tmp_path):
    cache = StoreRoot(tmp_path / "cache")
    speech = cache.store("speech", "enc-a")
    good = []
    for k in range(3):
        before = set(speech.shard_paths())
        with speech.writer() as writer:
            writer.put(f"{k:02d}aaaa", torch.randn(2, 5, 4))
        (new,) = set(speech.shard_paths()) - before
        good.append(new)
    text = cache.store("text", "enc-b")
    with text.writer() as writer:
        writer.put("77bbbb", torch.randn(3, 4))
        writer.put("78bbbb", torch.randn(2, 4))
    with speech.writer() as writer:
        writer.put("99nan", torch.full((2, 5, 4), float("nan")))
    nan = [p for p in speech.shard_paths() if p not in good][0]
    broken = speech.shard_dir / "20990101T000000-1-dead.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    stale = speech.shard_dir / ".20260101T000000-1-aaaa.safetensors.x1.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = speech.shard_dir / ".20260101T000000-1-bbbb.safetensors.x2.tmp"  # a live writer's: left alone
    fresh.write_bytes(b"half")
    legacy = speech.folder / "ab" / "ab01.safetensors"  # the pre-store layout
    legacy.parent.mkdir()
    legacy.write_bytes(b"old")
    return cache.root, good, text.shard_paths()[0], nan, broken, stale, fresh, legacy


def test_info_lists_each_encoder(tmp_path, capsys):
    root, *_ = _cache(tmp_path)
    assert main(["cache", "info", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "enc-a" in out and "enc-b" in out
    assert "4 entries      5 shards" in out and "2 entries      1 shards" in out
    assert "+1 old-layout files" in out


def test_verify_finds_and_fixes_damage(tmp_path, capsys):
    root, good, text, nan, broken, stale, fresh, _ = _cache(tmp_path)
    assert main(["cache", "verify", "--cache-dir", str(root)]) == 2
    captured = capsys.readouterr()
    assert f"corrupt: {broken}" in captured.err and f"stale temp file: {stale}" in captured.err
    assert str(nan) not in captured.err  # headers only without --deep
    assert str(fresh) not in captured.err
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep"]) == 2
    assert f"corrupt: {nan}: entry 99nan: non-finite values" in capsys.readouterr().err
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep", "--fix"]) == 0
    assert not broken.exists() and not nan.exists() and not stale.exists() and fresh.exists()
    assert all(p.exists() for p in good) and text.exists()
    assert main(["cache", "verify", "--cache-dir", str(root), "--deep"]) == 0
    assert "checked 4 files (5 entries): 0 corrupt, 0 stale" in capsys.readouterr().out


def test_prune_by_age_by_encoder_and_old_layout(tmp_path, capsys):
    root, good, text, nan, broken, _, _, legacy = _cache(tmp_path)
    broken.unlink()
    old = time.time() - 40 * 86400
    os.utime(good[1], (old, old))
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "30", "--dry-run"]) == 0
    assert "would remove 1 files" in capsys.readouterr().out and good[1].exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "30"]) == 0
    assert not good[1].exists() and good[0].exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--legacy"]) == 0
    assert not legacy.exists() and good[0].exists() and text.exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--encoder", "enc-b"]) == 0
    assert not text.exists() and not text.parent.parent.exists() and good[0].exists()
    assert main(["cache", "prune", "--cache-dir", str(root)]) == 1
    assert "say what to prune" in capsys.readouterr().err
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "nowhere")]) == 1


def test_the_cache_root_comes_from_a_config_like_other_commands(tmp_path, capsys):
    root, *_ = _cache(tmp_path)
    assert main(["cache", "info", "--cache-dir", str(root)]) == 0
    expected = capsys.readouterr().out
    assert main(["cache", "info", "--set", f"features.cache_dir={root}"]) == 0
    assert capsys.readouterr().out == expected
    config = tmp_path / "c.toml"
    config.write_text(f'[features]\ncache_dir = "{root}"\n')
    assert main(["cache", "info", "--config", str(config)]) == 0
    assert capsys.readouterr().out == expected
    assert main(["cache", "info", "--set", "features.cache_dir=/nowhere/x", "--cache-dir", str(root)]) == 0  # flag wins
    assert main(["cache", "info", "--set", "features.nope=1"]) == 1
    assert "features.nope" in capsys.readouterr().err
