"""`dmha train` and `dmha extract`: manifest → EmotionTask (features, model, loaders) → Lightning fit →
model directory + metrics."""
from __future__ import annotations

import dataclasses
from collections import Counter

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import Config, to_dict
from .corpora import Corpora, read_corpora
from .targets import predicts_category
from .data.manifest import Item, ManifestError, labels_of, read_manifest, require_splits
from .calibration import CalibrationError, calibration_payload, write_calibration
from .evaluation import head_logits, score_split
from .extraction import CorpusFeatures, features_for
from .figures import SCORING
from .modeldir import TRAINING_LOG_FILE, ModelBundle, save_model_dir
from .speaker_norm import alone
from .outputs import write_errors
from .task import EmotionTask, Prepared, Split
from .training import fit

log = logging.getLogger(__name__)


def train(manifest: str | Path | Sequence[str | Path], out: str | Path, config: Config,
          progress: bool = True) -> dict | None:
    """Train the DMHA head on the manifest's train split, select on dev, write RUN_DIR/model and metrics.json.

    `manifest`: one manifest, or several (one corpus each, or named by a `corpus` column): they train
    one model over one label vocabulary, each clip's loss over its own corpus's labels (dmha.corpora).
    Under DDP every rank runs this; only the main process returns the metrics (others return None).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifests = [manifest] if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    items, corpora = read_corpora(manifests)
    name = " + ".join(map(str, manifests))
    require_splits(items, ["train", "dev"], name)
    labels, items = _check_labels(items, name)
    task = EmotionTask(config, labels, progress, corpora)
    if _claim_run_dir(out, config):  # the same command, run again after it finished
        log.info("%s: already trained with this config; nothing to do (delete the folder to train again)", out)
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    prepared = task.prepare(items, name)
    write_errors(prepared.features.errors, out / "errors.tsv")
    module, train_loader, dev_loader = task.build(prepared)
    fitted = fit(module, train_loader, dev_loader, out, config.train, progress)
    if fitted is None:  # a secondary DDP rank: the main process writes the model and the metrics
        return None
    bundle = task.finished(prepared, module.model, *fitted, manifest)
    save_model_dir(out / "model", bundle)
    if (out / "logs" / "metrics.csv").is_file():  # per-epoch curves travel with the model (for reports)
        shutil.copy2(out / "logs" / "metrics.csv", out / "model" / TRAINING_LOG_FILE)
    calibration = _calibrate(bundle.model, prepared.splits["dev"], out / "model", config)
    metrics = _final_metrics(bundle, prepared, out, corpora)
    if calibration is not None:
        metrics["calibration"] = calibration
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _calibrate(model, dev: Split, model_dir: Path, config: Config) -> dict | None:
    """The probabilities' temperature, fitted on the dev speakers' clips each alone (dmha.calibration),
    written into the model directory and set on the head; None for a model without categories."""
    if not predicts_category(config.model):
        return None
    try:
        payload = calibration_payload(head_logits(model, alone(dev.refs)), np.array(dev.targets), "the dev split")
    except CalibrationError as err:
        log.warning("no calibration: %s", err)
        return None
    write_calibration(model_dir, payload)
    model.temperature = payload["temperature"]
    return payload


def extract(manifest: str | Path, config: Config, progress: bool = True, processes: int = 1) -> CorpusFeatures:
    """`dmha extract`: fill the feature store for every item of the manifest exactly as `train` would
    (same transcripts, waveform normalisation and encoders), optionally in several processes."""
    items = read_manifest(manifest)
    require_splits(items, ["train"], manifest)
    return features_for(items, config, progress=progress, processes=processes)


def _claim_run_dir(out: Path, config: Config) -> bool:
    """Record the config; a run folder holding another config's checkpoints must not be resumed.
    True when the folder holds a finished run of this same config (its metrics and model)."""
    saved = out / "config.json"
    text = json.dumps(to_dict(config), indent=2)
    same = saved.exists() and saved.read_text(encoding="utf-8") == text
    if saved.exists() and (out / "checkpoints").exists() and not same:
        raise ValueError(f"{out}: holds a run with a different config (see {saved}); "
                         "use a new --out folder, or delete this one to start over")
    if same and (out / "metrics.json").is_file() and (out / "model" / "config.json").is_file():
        return True
    saved.write_text(text, encoding="utf-8")
    return False


def _check_labels(items: list[Item], manifest) -> tuple[list[str], list[Item]]:
    """Labels come from the train split; a label seen only in dev/test could never be predicted. Other
    splits (e.g. MSP-Podcast's test3, labels hidden as "unknown") keep only items with a known label:
    training does not use them, and `predict` or `evaluate` scores them later."""
    labels = labels_of([i for i in items if i.split == "train"])
    unseen = sorted(set(labels_of([i for i in items if i.split in ("train", "dev", "test")])) - set(labels))
    if unseen:
        raise ManifestError(f"{manifest}: label(s) {', '.join(unseen)} appear in other splits but not in train")
    if len(labels) < 2:
        raise ManifestError(f"{manifest}: need at least 2 labels in train, found {labels}")
    left_out = Counter(i.split for i in items if i.label not in labels)
    if left_out:
        log.info("%s: %s left out of training (labels train does not have, e.g. hidden test labels)", manifest,
                 ", ".join(f"{n} {split} items" for split, n in sorted(left_out.items())))
    return labels, [i for i in items if i.label in labels]


def _final_metrics(bundle: ModelBundle, prepared: Prepared, out: Path, corpora: Corpora | None = None) -> dict:
    """Scores of the kept model on dev and test (top level = test when there is one, else dev), each
    clip alone: what `predict` gives a file (dmha.figures). A model that normalises per speaker is also
    scored grouped by the manifest's speakers (`dev_grouped`, `test_grouped`, `eval_{split}_grouped/`).
    With several corpora each report holds `per_corpus` figures, each corpus scored on its own labels."""
    model, config = bundle.model, bundle.config
    speakers = model.speech_norm.mode == "speaker"
    scores = {}
    for name in ("dev", "test"):
        split = prepared.splits.get(name)
        if not split:
            continue
        paths = [str(item.path) for item in split.items]
        args = (split.targets, bundle.labels)
        scores[name] = score_split(model, alone(split.refs) if speakers else split.refs, *args, out / f"eval_{name}",
                                   paths, config, split.items, corpora)
        if speakers:
            scores[f"{name}_grouped"] = score_split(model, split.refs, *args, out / f"eval_{name}_grouped", paths,
                                                    config, split.items, corpora)
    main = "test" if "test" in scores else "dev"
    top = {k: v for k, v in scores[main].items() if k != "confusion"}
    return {**top, "split": main, "scoring": SCORING, **scores, **bundle.meta, "skipped": len(prepared.features.errors),
            "features_computed": prepared.features.speech_computed}
