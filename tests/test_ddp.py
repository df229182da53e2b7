"""2-process DDP extraction and training on CPU (gloo), through the CLI as a user would run it."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_tone_corpus


def _train(manifest, out, tiny_encoders, cache, *extra):
    args = [sys.executable, "-m", "dmha.cli", "train", "--manifest", str(manifest), "--out", str(out), "--set",
            f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={cache}", "train.max_epochs=3", "train.batch_size=4", "model.hidden_layers=1",
            "train.crop_s=0", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


def _predictions(run: Path) -> list[tuple[str, str]]:
    with open(run / "eval_test" / "predictions.csv", newline="") as f:
        return [(row["path"], row["prediction"]) for row in csv.DictReader(f)]


def test_two_process_ddp_training_matches_single_process(tiny_encoders, tmp_path):
    manifest = write_tone_corpus(tmp_path / "corpus", n_per_class=8)
    single = _train(manifest, tmp_path / "single", tiny_encoders, tmp_path / "cache")
    assert single.returncode == 0, single.stderr[-3000:]
    # A cache of its own: the DDP run extracts in 2 processes too, then trains on 2 ranks.
    ddp = _train(manifest, tmp_path / "ddp", tiny_encoders, tmp_path / "cache_ddp", "train.devices=2")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Starting with 2 processes" in ddp.stderr + ddp.stdout  # really two ranks
    assert ddp.stdout.count("model: ") == 1 and ddp.stdout.count("macro-F1, each clip alone") == 1  # only the main process reports
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["features_computed"] == expected["features_computed"] == 16
    # Ranks see different shuffles and halves of each batch, so weights differ; on this separable
    # corpus both must reach the same decisions and scores.
    assert metrics["macro_f1"] == expected["macro_f1"] and metrics["dev_macro_f1"] == expected["dev_macro_f1"]
    assert metrics["macro_f1"] > 0.75 and expected["macro_f1"] > 0.75  # equal and learned, not equally at chance
    assert _predictions(tmp_path / "ddp") == _predictions(tmp_path / "single")
    from dmha.inference import EmotionRecognizer

    rec = EmotionRecognizer.load(tmp_path / "ddp" / "model")
    assert rec.labels == ["high", "low"]
