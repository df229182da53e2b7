"""benchmarks/ravdess_peers.py helpers on synthetic features: dev picks C (and layer), scores are sane."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ravdess_peers.py"


def load_bench():
    """The script is not a package: import it from its path."""
    spec = importlib.util.spec_from_file_location("ravdess_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()
LABELS = np.array(["angry", "calm", "happy", "sad"])


def blobs(n: int, dim: int, seed: int, signal: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian classes with fixed centres, so train/dev/test share one problem."""
    centres = np.random.default_rng(0).normal(size=(len(LABELS), dim)) * signal
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(LABELS)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), LABELS[y]


def test_select_svm_picks_c_from_grid_on_dev() -> None:
    (x_tr, y_tr), (x_dev, y_dev), (x_te, y_te) = blobs(80, 10, 1), blobs(40, 10, 2), blobs(40, 10, 3)
    c, dev_f1, model = bench.select_svm(x_tr, y_tr, x_dev, y_dev, grid=(0.1, 1.0, 10.0))
    assert c in (0.1, 1.0, 10.0)
    assert dev_f1 == pytest.approx(bench.scores(y_dev, model.predict(x_dev))["macro_f1"])
    test = bench.scores(y_te, model.predict(x_te))
    assert all(0.0 <= v <= 1.0 for v in test.values())
    assert test["macro_f1"] > 0.8


def test_select_c_prefers_what_dev_rewards() -> None:
    """Every grid value is tried in order and the one that scores best on dev wins."""
    calls = []

    def fit(x, y, c):
        calls.append(c)
        return type("M", (), {"predict": lambda self, x: np.where(c == 2.0, y_dev, LABELS[0])})()

    (x_tr, y_tr), (x_dev, y_dev) = blobs(20, 3, 1), blobs(20, 3, 2)
    c, dev_f1, _ = bench.select_c(fit, x_tr, y_tr, x_dev, y_dev, (1.0, 2.0, 3.0))
    assert calls == [1.0, 2.0, 3.0] and c == 2.0 and dev_f1 == 1.0


def test_select_probe_finds_the_informative_layer() -> None:
    def layered(n, seed):
        x, y = blobs(n, 8, seed)
        noise = np.random.default_rng(seed + 10).normal(size=(n, 3, 8)).astype(np.float32)
        noise[:, 1] = x  # only layer 1 carries the labels
        return noise, y

    (f_tr, y_tr), (f_dev, y_dev), (f_te, y_te) = layered(80, 1), layered(40, 2), layered(40, 3)
    layer, c, dev_f1, model = bench.select_probe(f_tr, y_tr, f_dev, y_dev, grid=(0.01, 1.0))
    assert layer == 1 and c in (0.01, 1.0) and 0.0 <= dev_f1 <= 1.0
    assert bench.scores(y_te, model.predict(f_te[:, layer]))["macro_f1"] > 0.8


class StandInEncoder:
    """Test-only stand-in for dmha.encoders' speech encoder: (L, T, D) per wave, T from the length."""

    info = type("Info", (), {"identity": "stand-in", "num_layers": 3, "dim": 4})()

    def encode(self, waves):
        return [torch.full((3, max(1, len(w) // 320), 4), float(w.mean())) for w in waves]


def test_pooled_states_shape_and_order(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], np.full(1600 * (i + 1), 0.1 * i, np.float32), 16000, subtype="FLOAT")
    feats = bench.pooled_states(StandInEncoder(), paths, chunk=2)
    assert feats.shape == (5, 3, 4) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:, 0, 0], 0.1 * np.arange(5), atol=1e-6)


def test_run_probe_end_to_end_with_stand_in(tmp_path: Path, monkeypatch) -> None:
    """The probe's wiring (encoder → cache → layer/C on dev → test scores) without the real model."""
    sf = pytest.importorskip("soundfile")
    import dmha.encoders

    monkeypatch.setattr(dmha.encoders, "load_speech_encoder", lambda name: StandInEncoder())
    rows, rng = [], np.random.default_rng(0)
    for i in range(48):
        split, label = bench.SPLITS[i % 3], LABELS[(i // 3) % len(LABELS)]
        path = tmp_path / f"{i}.wav"
        level = 0.1 * (1 + list(LABELS).index(label)) + 0.01 * rng.normal()
        sf.write(path, np.full(3200, level, np.float32), 16000, subtype="FLOAT")
        rows.append({"path": str(path), "emotion": label, "split": split})
    idx = bench.split_indices(rows)
    result = bench.run_probe(rows, idx, tmp_path / "cache", "k")
    assert 0.0 <= result["macro_f1"] <= 1.0 and result["macro_f1"] > 0.9
    assert result["chosen"]["layer"] in range(3) and result["chosen"]["C"] in bench.PROBE_C
    assert not result["features_cached"] and bench.run_probe(rows, idx, tmp_path / "cache", "k")["features_cached"]


def test_cached_computes_once(tmp_path: Path) -> None:
    calls = []
    make = lambda: calls.append(1) or np.arange(6, dtype=np.float32).reshape(2, 3)
    first, hit1 = bench.cached(tmp_path / "c" / "x.npy", make)
    second, hit2 = bench.cached(tmp_path / "c" / "x.npy", make)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(first, second)


def test_merge_results_drops_other_data(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"data_key": "k1", "systems": {"a": {"macro_f1": 0.4}}}))
    assert set(bench.merge_results(out, "k1", {"b": {}})["systems"]) == {"a", "b"}
    assert set(bench.merge_results(out, "k2", {"b": {}})["systems"]) == {"b"}


def test_missing_data_exits_2(tmp_path: Path, capsys) -> None:
    assert bench.main(["--data", str(tmp_path / "nowhere"), "--only", "a"]) == 2
    assert "not found" in capsys.readouterr().err
