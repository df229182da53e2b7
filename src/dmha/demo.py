"""`dmha demo`: synthesise a small emotional corpus offline, then transcribe → train → evaluate → predict."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .config import load
from .data.demo_corpus import synthesize_demo_corpus
from .data.manifest import read_manifest, write_manifest
from .evaluation import evaluate
from .experiment import train
from .inference import EmotionRecognizer
from .layout import StoreRoot
from .transcription import fill_transcripts

log = logging.getLogger(__name__)

# Small-data recipe: the paper's head and loss, more epochs of a tiny corpus, short crops (clips are ~2 s).
DEMO_OVERRIDES = ["train.max_epochs=30", "train.batch_size=16", "train.lr=5e-4", "train.crop_s=3.0",
                  "train.early_stop_patience=12"]


def run_demo(out: Path, overrides: list[str] = (), progress: bool = True) -> dict:
    """Run the whole pipeline on the synthetic corpus; returns where everything was written and the scores."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = synthesize_demo_corpus(out / "corpus", progress=progress)
    config = load(None, [*DEMO_OVERRIDES, *overrides])

    items = read_manifest(manifest)
    items, errors = fill_transcripts(items, config.encoders, StoreRoot.from_config(config.features),
                                     config.features.batch_size, progress)
    transcribed = out / "manifest.csv"
    write_manifest(items, transcribed)

    run = out / "run"
    train(transcribed, run, config, progress)
    model_dir = out / "model"
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    (run / "model").rename(model_dir)
    report = evaluate(model_dir, transcribed, "test", out / "eval", progress)
    (out / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")

    test_items = [i for i in items if i.split == "test"]
    test_files = [i.path for label in sorted({i.label for i in test_items})
                  for i in [i for i in test_items if i.label == label][:2]]  # two per emotion
    preds, _ = EmotionRecognizer.load(model_dir).predict_files(test_files, batch_size=4)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for pred in preds:
            f.write(json.dumps(pred.to_dict()) + "\n")
    labels = sorted({i.label for i in items})
    return {
        "model": str(model_dir), "metrics": str(out / "metrics.json"), "predictions": str(out / "predictions.jsonl"),
        "test_macro_f1": round(report["macro_f1"], 4), "test_accuracy": round(report["accuracy"], 4),
        "chance_accuracy": round(1 / len(labels), 4), "labels": labels,
        "asr_errors": len(errors), "seconds": round(time.perf_counter() - started, 1),
    }
