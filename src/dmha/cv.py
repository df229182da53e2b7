"""`dmha cv`: speaker-independent K-fold cross-validation of one config on one manifest (or several).

The fold protocol is dmha.folds; the runs are trained by dmha.jobs (each with its config, explicitly);
dmha.cv_report says what the cv found. The frozen encoders run once for the whole manifest (one
feature store serves every fold), so waveform normalisation must not depend on the fold: `train`
(the training split's mean/std) is replaced by `utterance` (each clip's own mean/std), which uses
no label and no test-fold audio.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .config import Config, ConfigError, from_dict, to_dict
from .corpora import read_corpora
from .cv_report import summarize, write_cv_report, write_pooled_confusion
from .data.manifest import write_manifest
from .figures import run_figures
from .fileio import atomic_write_text
from .folds import Fold, assign_corpus_folds, assign_folds, fold_items, make_folds
from .jobs import RunJob, quiet_lightning, run_jobs

log = logging.getLogger(__name__)
CV_FILE = "cv.json"


def cv_config(config: Config) -> tuple[Config, list[str]]:
    """The config every fold trains with, and notes on what cv changed (one store for all folds)."""
    notes = []
    if config.features.normalize == "train":
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, normalize="utterance"))
        notes.append("features.normalize=train would re-extract every fold (its statistics depend on the "
                     "training speakers); cv uses features.normalize=utterance, which needs no statistics")
    return config, notes


def _claim(out: Path, header: dict) -> None:
    """A cv folder holds one cv: resuming with another config, manifest or fold assignment is an error."""
    path = out / CV_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        try:  # a cv begun by an older dmha: keys added since then read as their defaults
            old["config"] = to_dict(from_dict(old["config"]))
        except ConfigError:
            pass
        if isinstance(old.get("manifest"), str) and Path(old["manifest"]).is_absolute():  # an older dmha's cv.json
            old["manifest"] = manifest_from(out, Path(old["manifest"]))
        for key in ("config", "folds", "manifest"):
            if old.get(key) != header[key]:
                raise ValueError(f"{out}: holds a cv with a different {key} (see {path}); "
                                 "use a new --out folder, or delete this one to start over")
        dropped = sorted(set(old.get("seeds", [])) - set(header["seeds"]))
        if dropped:  # adding seeds to a finished cv is fine; forgetting some would hide finished runs
            raise ValueError(f"{out}: holds a cv with seeds {old['seeds']}; --seeds must include them "
                             f"(missing: {', '.join(map(str, dropped))}), or use a new --out folder")


def manifest_from(out: Path, manifest: Path) -> str:
    """The manifest as cv.json records it: relative to the cv folder, so a committed cv.json names no
    folder of the machine it ran on, and the pair can move together."""
    return os.path.relpath(Path(manifest).resolve(), Path(out).resolve())


def run_dir(out: Path, fold: Fold, seed: int) -> Path:
    return out / f"fold{fold.index}" / f"seed{seed}"


def cross_validate(manifest: str | Path | Sequence[str | Path], out: str | Path, config: Config,
                   folds: int | None = 5, fold_column: str | None = None, seeds: Sequence[int] = (0, 1, 2),
                   progress: bool = True, echo=print, jobs: int = 1) -> dict:
    """Train and test one model per fold and seed; write DIR/cv.json, the pooled confusion matrix and
    report.html. Resumable: finished fold/seed runs are read back, an unfinished one resumes; seeds
    may be added to a finished cv. `jobs` > 1 trains that many runs at once in spawned processes,
    splitting the CPU threads between them (small heads use 2+ threads poorly, see README)."""
    from .extraction import features_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifests = [Path(manifest)] if isinstance(manifest, (str, os.PathLike)) else [Path(m) for m in manifest]
    items, corpora = read_corpora(manifests)
    config, notes = cv_config(config)
    fold_list = _folds(items, corpora, folds, fold_column, manifests, notes)
    header = _header(out, manifests, config, seeds, fold_column, fold_list, notes)
    _claim(out, header)
    _announce(echo, notes, fold_list, seeds, manifests)
    quiet_lightning()
    # The encoders run once, over every utterance: each fold's `train` then finds them all in the store.
    extracted = features_for([dataclasses.replace(i, split="train") for i in items], config,
                             progress=progress).speech_computed
    pending = []
    for fold in fold_list:
        fold_manifest = out / f"fold{fold.index}" / "manifest.csv"
        if not fold_manifest.is_file():
            write_manifest(fold_items(items, fold, fold_column, corpora.several), fold_manifest)
        pending += [RunJob(fold.index, seed, fold_manifest, run_dir(out, fold, seed), dataclasses.replace(config, seed=seed))
                    for seed in seeds]
    finished = [job for job in pending if (job.folder / "metrics.json").is_file()]
    runs = [_run_result(job) for job in finished]
    bar = tqdm(total=len(pending), initial=len(runs), desc="cv folds", unit="run", disable=not progress)
    for job in run_jobs([job for job in pending if job not in finished], jobs):
        runs.append(_run_result(job))
        _write(out, header, runs, len(fold_list), seeds, extracted)  # each finished run is on disk at once
        bar.set_postfix_str(f"fold {fold_list[job.fold].name} seed {job.seed} done")
        bar.update()
    bar.close()
    runs.sort(key=lambda r: (r["fold"], r["seed"]))
    result = _write(out, header, runs, len(fold_list), seeds, extracted)
    write_pooled_confusion(out, runs)
    write_cv_report(out, result)
    return result


def _folds(items, corpora, folds: int | None, fold_column: str | None, manifests: list[Path],
           notes: list[str]) -> list[Fold]:
    """The folds: within each corpus when there are several (a note says so), else by the fold column or
    the speakers' natural order."""
    name = " + ".join(map(str, manifests))
    if not corpora.several:
        return make_folds(assign_folds(items, folds, fold_column, name))
    if fold_column:
        raise ConfigError("--fold-column takes one corpus; with several, cv makes the folds within each corpus")
    notes.append(f"{len(corpora.labels)} corpora ({', '.join(sorted(corpora.labels))}): folds are made within "
                 "each corpus by speaker, so every fold tests every corpus")
    return make_folds(assign_corpus_folds(items, folds, name))


def _header(out: Path, manifests: list[Path], config: Config, seeds, fold_column, fold_list: list[Fold],
            notes: list[str]) -> dict:
    """What identifies a cv (a folder holds one): its manifests, config, folds and seeds, and its protocol."""
    recorded = [manifest_from(out, m) for m in manifests]
    return {"manifest": recorded[0] if len(recorded) == 1 else recorded, "config": to_dict(config),
            "seeds": list(seeds), "fold_column": fold_column,
            "folds": [{"fold": f.index, "name": f.name, "test": list(f.test), "dev": list(f.dev)} for f in fold_list],
            "protocol": "test fold k, dev fold k+1 (cyclic), train the other folds; each fold's figure is the mean "
                        "over seeds; macro_f1 scores each test clip alone, macro_f1_grouped with its speaker's "
                        "other test recordings (transductive)", "notes": notes}


def _announce(echo, notes: list[str], fold_list: list[Fold], seeds, manifests: list[Path]) -> None:
    for note in notes:
        echo(f"note: {note}")
    echo(f"cv: {len(fold_list)} folds of speakers x {len(seeds)} seeds on {' + '.join(map(str, manifests))}; "
         "for test fold k the dev speakers are fold k+1 (cyclic), the other folds train")
    for fold in fold_list:
        echo(f"  fold {fold.name}: test {', '.join(fold.test)} | dev {', '.join(fold.dev)} | "
             f"train {len(fold.train)} speakers")


def _run_result(job: RunJob) -> dict:
    """One finished run's figures (dmha.figures), named by its place in the cv folder."""
    metrics = json.loads((job.folder / "metrics.json").read_text(encoding="utf-8"))
    return {"fold": job.fold, "seed": job.seed, "run": f"fold{job.fold}/seed{job.seed}", **run_figures(metrics)}


def _write(out: Path, header: dict, runs: list[dict], n_folds: int, seeds, extracted: int) -> dict:
    result = {**header, "features_computed_before_folds": extracted, "runs": runs,
              "summary": summarize(runs, n_folds, seeds)}
    atomic_write_text(out / CV_FILE, json.dumps(result, indent=2))
    return result


def read_cv(folder: str | Path) -> dict | None:
    """A cv folder's cv.json, or None when the folder is not one (for `dmha compare`)."""
    path = Path(folder) / CV_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
