"""The sharded feature store: round trips, memory mapping, several writers, resumption, sharing work."""
import multiprocessing as mp
import pickle
import time

import numpy as np
import pytest
import torch

from dmha.parallel import WorkShare
from dmha.store import FeatureStore, StoreError, read_header


def _store(tmp_path, **kw) -> FeatureStore:
    return FeatureStore(tmp_path / "store", identity="enc-a", **kw)


def test_round_trip_fp16_views_on_a_memory_map(tmp_path):
    store = _store(tmp_path)
    values = {f"k{i}": torch.randn(3, 5 + i, 4) for i in range(4)}
    with store.writer() as writer:
        for key, tensor in values.items():
            writer.put(key, tensor)
        assert "k0" not in store  # buffered, not yet a shard
    assert len(store) == 4 and len(store.shard_paths()) == 1
    for key, tensor in values.items():
        got = store.get(key)
        assert got.dtype == torch.float16 and got.shape == tensor.shape
        assert torch.allclose(got.float(), tensor, atol=2e-3)
    array = store.view(store.location("k1"))
    assert store.get("k1").data_ptr() == array.ctypes.data  # the tensor is this view, not a copy
    while not isinstance(array, np.memmap) and array.base is not None:
        array = array.base
    assert isinstance(array, np.memmap)
    reopened = FeatureStore(tmp_path / "store")
    assert sorted(reopened.keys()) == sorted(values) and reopened.identity == "enc-a"
    with pytest.raises(KeyError, match="no entry nope"):
        reopened.get("nope")


def test_writer_flushes_by_size_and_skips_duplicates(tmp_path):
    store = _store(tmp_path, shard_bytes=2 * 8 * 8 * 2)  # two 8x8 fp16 entries per shard
    with store.writer() as writer:
        for i in range(5):
            writer.put(f"k{i}", torch.ones(8, 8) * i)
        writer.put("k0", torch.zeros(8, 8) - 1)  # already stored: ignored
    assert len(store.shard_paths()) == 3 and len(store) == 5
    assert store.get("k0").float().eq(0).all()


def test_a_second_process_sees_new_shards_after_refresh(tmp_path):
    a, b = _store(tmp_path), FeatureStore(tmp_path / "store")
    with a.writer() as writer:
        writer.put("x", torch.ones(2, 2))
    assert "x" not in b
    assert b.refresh() == 1 and b.get("x").sum().item() == 4


def test_temp_files_of_a_killed_writer_are_never_read(tmp_path):
    store = _store(tmp_path)
    with store.writer() as writer:
        writer.put("done", torch.ones(2, 2))
    (store.shard_dir / ".20260101T000000-1-abcd.safetensors.x.tmp").write_bytes(b"\x10\x00half a shard")
    reopened = FeatureStore(tmp_path / "store")
    assert list(reopened.keys()) == ["done"]


def test_truncated_shard_is_a_clear_error(tmp_path):
    store = _store(tmp_path)
    with store.writer() as writer:
        writer.put("a", torch.ones(64, 64))
    shard = store.shard_paths()[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match="truncated"):
        read_header(shard)
    assert "a" not in FeatureStore(tmp_path / "store")  # skipped with a warning: recomputed, not fatal


def test_store_pickles_for_dataloader_workers(tmp_path):
    store = _store(tmp_path)
    with store.writer() as writer:
        writer.put("a", torch.arange(6.0).view(2, 3))
    store.get("a")  # opens a memory map, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("a").float().tolist() == [[0, 1, 2], [3, 4, 5]]


def _write_range(folder, start, stop, barrier):
    store = FeatureStore(folder, identity="enc-a", shard_bytes=4 * 16 * 2)
    barrier.wait()
    with store.writer() as writer:
        for i in range(start, stop):
            writer.put(f"k{i}", torch.full((4, 4), float(i)))


def test_concurrent_writers_in_separate_processes(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    folder = tmp_path / "store"
    FeatureStore(folder, identity="enc-a")
    procs = [ctx.Process(target=_write_range, args=(folder, lo, hi, barrier)) for lo, hi in ((0, 30), (20, 50))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = FeatureStore(folder)
    assert sorted(store.keys(), key=lambda k: int(k[1:])) == [f"k{i}" for i in range(50)]
    assert all(store.get(f"k{i}").float().eq(i).all() for i in range(50))  # overlaps are harmless copies


def test_share_from_env_and_waiting(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert WorkShare.from_env() == WorkShare(1, 3)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert WorkShare.from_env() == WorkShare(0, 2)
    monkeypatch.delenv("SLURM_PROCID")
    assert WorkShare.from_env() == WorkShare()

    store = _store(tmp_path)
    store.mark_failed("bad", "unreadable audio")
    with store.writer() as writer:
        writer.put("here", torch.ones(1, 1))
    share = WorkShare(0, 2, stall_s=0.3, poll_s=0.05)
    assert share.wait_for(store, ["here", "bad"]) == []  # present or failed elsewhere: nothing to wait for
    start = time.monotonic()
    assert share.wait_for(store, ["here", "never"]) == ["never"]  # nobody makes progress: take it over
    assert time.monotonic() - start < 5
    assert store.failure("bad") == "unreadable audio" and store.failure("here") is None
