"""`dmha cv`: speaker-independent K-fold cross-validation of one config on one manifest (or several).

The fold protocol is dmha.folds; the runs are trained by dmha.jobs (each with its config, explicitly);
dmha.cv_report says what the cv found. The frozen encoders run once for the whole manifest (one
feature store serves every fold), so waveform normalisation must not depend on the fold: `train`
(the training split's mean/std) is replaced by `utterance` (each clip's own mean/std), which uses
no label and no test-fold audio.

`dev_only=True` is the mode a recipe is chosen in (choose on dev, report test once): the folds and dev
speakers are the same, but each fold's test speakers are left out of its manifest altogether, so no run
trains on, scores or writes anything about them, and cv.json holds dev figures only.

`leave_corpus_out=True` (`dmha cv --leave-corpus-out`, several corpora) is the protocol of
generalisation (dmha.folds.corpus_out_folds): fold k trains on every other corpus (model selection on
their dev speakers) and scores every clip of corpus k, each alone, as a model meets a user's recording.
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
from .figures import dev_figures, run_figures
from .fileio import atomic_write_text
from .folds import Fold, assign_corpus_folds, assign_folds, corpus_out_folds, corpus_out_items, fold_items, make_folds
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
        if bool(old.get("dev_only")) != bool(header.get("dev_only")):
            kind = "a dev-only cv (--dev-only)" if old.get("dev_only") else "a cv with test folds"
            raise ValueError(f"{out}: holds {kind} (see {path}); use another --out folder for the other kind")
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
                   progress: bool = True, echo=print, jobs: int = 1, dev_only: bool = False,
                   leave_corpus_out: bool = False) -> dict:
    """Train and test one model per fold and seed; write DIR/cv.json, the pooled confusion matrix and
    report.html. Resumable: finished fold/seed runs are read back, an unfinished one resumes; seeds
    may be added to a finished cv. `jobs` > 1 trains that many runs at once in spawned processes,
    splitting the CPU threads between them (small heads use 2+ threads poorly, see README).
    `dev_only`: each fold's test speakers are held out of its manifest (never trained, scored or
    written): cv.json holds the dev figures only, for choosing a recipe. `leave_corpus_out`: one fold per
    corpus, tested on all of it after training on the others (`folds` and `fold_column` do not apply)."""
    from .extraction import features_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifests = [Path(manifest)] if isinstance(manifest, (str, os.PathLike)) else [Path(m) for m in manifest]
    items, corpora = read_corpora(manifests)
    config, notes = cv_config(config)
    left_out: dict[int, dict[str, int]] = {}
    if leave_corpus_out:
        if fold_column or folds is not None:
            raise ConfigError("--leave-corpus-out makes one fold per corpus: --folds and --fold-column do not apply")
        if dev_only:
            raise ConfigError("--leave-corpus-out scores the corpus each fold leaves out, which is what a transfer "
                              "recipe is developed on (the corpora that judge it are not among the manifests); "
                              "--dev-only would score nothing but the training corpora's own dev speakers")
        fold_list = corpus_out_folds(items, " + ".join(map(str, manifests)))
        left_out = {f.index: corpus_out_items(items, f)[1] for f in fold_list}
        notes.append(f"leave-one-corpus-out over {len(fold_list)} corpora: fold k tests every clip of corpus k, "
                     "dev = the other corpora's dev speakers, train = the rest of them")
    else:
        fold_list = _folds(items, corpora, folds, fold_column, manifests, notes)
    header = _header(out, manifests, config, seeds, fold_column, fold_list, notes, dev_only, left_out)
    _claim(out, header)
    _announce(echo, notes, fold_list, seeds, manifests, dev_only)
    quiet_lightning()
    # The encoders run once, over every utterance: each fold's `train` then finds them all in the store.
    extracted = features_for([dataclasses.replace(i, split="train") for i in items], config,
                             progress=progress).speech_computed
    pending = []
    for fold in fold_list:
        fold_manifest = out / f"fold{fold.index}" / "manifest.csv"
        if not fold_manifest.is_file():
            fold_rows = (corpus_out_items(items, fold)[0] if leave_corpus_out
                         else fold_items(items, fold, fold_column, corpora.several))
            if dev_only:  # the held-out speakers are not in the run's manifest at all
                fold_rows = [item for item in fold_rows if item.split != "test"]
            write_manifest(fold_rows, fold_manifest)
        pending += [RunJob(fold.index, seed, fold_manifest, run_dir(out, fold, seed), dataclasses.replace(config, seed=seed))
                    for seed in seeds]
    finished = [job for job in pending if (job.folder / "metrics.json").is_file()]
    runs = [_run_result(job, dev_only) for job in finished]
    bar = tqdm(total=len(pending), initial=len(runs), desc="cv folds", unit="run", disable=not progress)
    for job in run_jobs([job for job in pending if job not in finished], jobs):
        runs.append(_run_result(job, dev_only))
        _write(out, header, runs, len(fold_list), seeds, extracted)  # each finished run is on disk at once
        bar.set_postfix_str(f"fold {fold_list[job.fold].name} seed {job.seed} done")
        bar.update()
    bar.close()
    runs.sort(key=lambda r: (r["fold"], r["seed"]))
    result = _write(out, header, runs, len(fold_list), seeds, extracted)
    if not dev_only:
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


PROTOCOL = ("test fold k, dev fold k+1 (cyclic), train the other folds; each fold's figure is the mean over seeds; "
            "macro_f1 scores each test clip alone, macro_f1_grouped with its speaker's other test recordings "
            "(transductive)")
DEV_ONLY_PROTOCOL = ("dev only: fold k held out (its speakers are in no run's manifest: never trained, scored or "
                     "written), dev fold k+1 (cyclic), train the other folds; each fold's figure is the mean over "
                     "seeds; dev_macro_f1_alone scores each dev clip alone, dev_macro_f1_grouped with its speaker's "
                     "other dev recordings")


LEAVE_CORPUS_OUT_PROTOCOL = ("leave one corpus out: fold k scores every clip of corpus k (its labels that a "
                             "training corpus offers; `left_out` counts the others), trained on the other corpora, "
                             "dev = their dev speakers; each fold's figure is the mean over seeds; macro_f1 scores "
                             "each clip alone, macro_f1_grouped with its speaker's other recordings (transductive)")


def _header(out: Path, manifests: list[Path], config: Config, seeds, fold_column, fold_list: list[Fold],
            notes: list[str], dev_only: bool = False, left_out: dict[int, dict[str, int]] | None = None) -> dict:
    """What identifies a cv (a folder holds one): its manifests, config, folds and seeds, and its protocol.
    A dev-only cv names each fold's held-out speakers `held_out` (they are no run's test split). A
    leave-one-corpus-out cv says, per fold, how many clips of each label no training corpus offers."""
    recorded = [manifest_from(out, m) for m in manifests]
    role = "held_out" if dev_only else "test"
    folds = [{"fold": f.index, "name": f.name, role: list(f.test), "dev": list(f.dev)} for f in fold_list]
    protocol = DEV_ONLY_PROTOCOL if dev_only else PROTOCOL
    if left_out is not None and left_out:
        for fold in folds:
            fold["left_out"] = left_out[fold["fold"]]
        protocol = LEAVE_CORPUS_OUT_PROTOCOL
    header = {"manifest": recorded[0] if len(recorded) == 1 else recorded, "config": to_dict(config),
              "seeds": list(seeds), "fold_column": fold_column, "folds": folds, "protocol": protocol, "notes": notes}
    if left_out:
        header["leave_corpus_out"] = True
    if dev_only:
        header["dev_only"] = True
    return header


def _announce(echo, notes: list[str], fold_list: list[Fold], seeds, manifests: list[Path], dev_only: bool) -> None:
    for note in notes:
        echo(f"note: {note}")
    held = "held out (dev only: never trained or scored)" if dev_only else "test"
    echo(f"cv{' (dev only)' if dev_only else ''}: {len(fold_list)} folds of speakers x {len(seeds)} seeds on "
         f"{' + '.join(map(str, manifests))}; for fold k the dev speakers are fold k+1 (cyclic), the other folds train")
    for fold in fold_list:
        echo(f"  fold {fold.name}: {held} {', '.join(fold.test)} | dev {', '.join(fold.dev)} | "
             f"train {len(fold.train)} speakers")


def _run_result(job: RunJob, dev_only: bool = False) -> dict:
    """One finished run's figures (dmha.figures), named by its place in the cv folder."""
    metrics = json.loads((job.folder / "metrics.json").read_text(encoding="utf-8"))
    figures = dev_figures(metrics) if dev_only else run_figures(metrics)
    return {"fold": job.fold, "seed": job.seed, "run": f"fold{job.fold}/seed{job.seed}", **figures}


def _write(out: Path, header: dict, runs: list[dict], n_folds: int, seeds, extracted: int) -> dict:
    summary = summarize(runs, n_folds, seeds)
    if header.get("leave_corpus_out"):  # each fold is one corpus: its figures are the per-corpus ones
        summary.pop("per_corpus", None)
    result = {**header, "features_computed_before_folds": extracted, "runs": runs, "summary": summary}
    atomic_write_text(out / CV_FILE, json.dumps(result, indent=2))
    return result


def read_cv(folder: str | Path) -> dict | None:
    """A cv folder's cv.json, or None when the folder is not one (for `dmha compare`)."""
    path = Path(folder) / CV_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def figures_about_test(cv: dict) -> list[str]:
    """Where a cv.json says something about test folds: keys naming `test`, and figures (macro-F1, ECE, ...)
    that are not dev figures. A dev-only cv has none; a recipe is chosen only from a JSON that has none."""
    from .figures import CALIBRATION, CATEGORY

    found = []

    def is_test_figure(key: str) -> bool:
        base = key.removeprefix("seed_").removesuffix("_alone").removesuffix("_grouped")
        return base in (*CATEGORY, *CALIBRATION, "mean_ccc") or base.startswith("ccc_")

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if "test" in str(key).lower() or (where.split("/")[1:2] != ["config"] and is_test_figure(str(key))):
                    found.append(f"{where}/{key}")
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(cv, "")
    return found


def dev_only_view(cv: dict, how: str) -> dict:
    """A full cv.json reduced to what a dev-only cv of the same folds would hold (its dev figures,
    recomputed over folds; held-out speakers named `held_out`), with `dev_only` saying `how` it was made.
    For the record of choices made before `--dev-only` existed: the full runs did compute test figures."""
    from .cv_report import summarize

    runs = [{k: v for k, v in run.items() if k in ("fold", "seed", "run", "best_epoch", "features_computed")
             or k.startswith("dev_")} for run in cv["runs"]]
    folds = [{"fold": f["fold"], "name": f["name"], "held_out": f["test"], "dev": f["dev"]} for f in cv["folds"]]
    out = {**{k: v for k, v in cv.items() if k not in ("runs", "summary", "folds")}, "folds": folds,
           "protocol": DEV_ONLY_PROTOCOL, "dev_only": how, "runs": runs,
           "summary": summarize(runs, len(folds), cv["seeds"])}
    left = figures_about_test(out)
    if left:
        raise ValueError(f"dev_only_view left test figures: {left[:5]}")
    return out
