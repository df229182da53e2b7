"""benchmarks/finetune_cost.py measures every N on tiny encoders and reuses the store (not a timed test)."""
import json

import pytest
import subprocess
import sys
from pathlib import Path

from conftest import write_tone_corpus

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_finetune_cost_reports_each_n(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "corpus")
    out = tmp_path / "cost.json"
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.batch_size=4", "model.hidden_layers=1"]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_cost.py"), "--manifest", str(manifest),
                          "--layers", "0,2", "--out", str(out), *sum((["--set", s] for s in sets), [])],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["finetune_layers"] for r in rows] == [0, 2]
    assert rows[0]["features_computed"] > 0 and rows[1]["features_computed"] == 0  # the store is reused
    assert rows[0]["live_encoder_params"] == 0 < rows[1]["live_encoder_params"]
    assert all(r["epoch_s"] > 0 and r["peak_rss_mb"] > 0 and r["batches"] > 0 for r in rows)
    assert rows[0]["epoch_ratio"] == 1.0 and "N=2: epoch" in run.stdout
