"""benchmarks/memory.py and benchmarks/asr.py: their measuring helpers, and memory.py end to end on
short inputs (not timed tests: only that every figure is produced and plausible)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import require_ravdess

ROOT = Path(__file__).resolve().parent.parent


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_word_accuracy_counts_substitutions_insertions_and_deletions():
    asr = _module("asr")
    assert asr.word_errors("kids are talking".split(), "kids are talking".split()) == 0
    assert asr.word_errors("kids are talking".split(), "kid are walking by".split()) == 3  # 2 sub + 1 ins
    assert asr.word_errors("a b c".split(), []) == 3
    assert asr.word_accuracy(["Kids are talking by the door."], ["kids are talking by the door"]) == 1.0
    assert asr.word_accuracy(["Dogs are sitting by the door", "a b"], ["dogs sitting by the door", "a b"]) \
        == pytest.approx(1 - 1 / 8)


def test_memory_recording_has_the_asked_length(tmp_path):
    memory = _module("memory")
    clips = [np.full(8000, 0.1, np.float32), np.full(12000, -0.1, np.float32)]
    memory.write_recording(tmp_path / "r.wav", 7.25, clips, seed=0)
    wave, rate = sf.read(tmp_path / "r.wav")
    assert rate == 16000 and wave.size == 116000 and np.abs(wave).max() > 0.05


@pytest.mark.slow
def test_memory_benchmark_measures_each_process(tmp_path):
    data = require_ravdess()
    out = tmp_path / "memory.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--ravdess", str(data),
                          "--minutes", "0.05", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4  # 2 variants × whole/--segment (one length: each row is a fresh process, ~5 s)
    assert all(200 < r["peak_rss_mb"] < 4000 for r in rows)  # a real process's peak, not this one's
