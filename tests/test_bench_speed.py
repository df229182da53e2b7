"""benchmarks/speed.py runs end to end on a few RAVDESS clips and writes every key (not a timed test)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_ravdess

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("cache_epoch_speedup", "whisper_true_length_speedup", "batched_inference_speedup", "batched_max_abs_diff",
        "predict_rtf_cpu", "predict_rtf_cpu_given_transcript", "extract_audio_s_per_s", "peak_rss_mb",
        "cache_bytes_per_audio_hour", "store_read_ms_per_item", "cache_epoch_speedup_wavlm_large_standard",
        "cache_epoch_speedup_wavlm_large_subvector", "predict_rtf_cpu_asr_window_10s")


@pytest.mark.slow
def test_speed_benchmark_writes_every_figure(tmp_path):
    data = require_ravdess()
    out = tmp_path / "latest.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--ravdess", str(data),
                          "--clips", "8", "--predict-clips", "4", "--padded-clips", "2", "--paper-clips", "2",
                          "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert all(key in results and results[key] > 0 for key in KEYS if key != "batched_max_abs_diff")
    assert results["batched_max_abs_diff"] <= 1e-4 and results["batched_same_transcripts"] == 1.0
    # Whisper base stores 7 x 512 fp16 values per 20 ms frame: 1.29 GB per audio hour
    assert results["cache_bytes_per_audio_hour"] == pytest.approx(7 * 512 * 2 * 50 * 3600, rel=0.02)
