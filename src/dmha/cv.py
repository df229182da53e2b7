"""`dmha cv`: speaker-independent K-fold cross-validation of one config on one manifest.

Speakers are grouped into K folds (never split). For test fold k the dev speakers are fold k+1
(cyclic) and the other K-2 folds train. The frozen encoders run once for the whole manifest (one
feature store serves every fold), so waveform normalisation must not depend on the fold: `train`
(the training split's mean/std) is replaced by `utterance` (each clip's own mean/std), which uses
no label and no test-fold audio.
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import multiprocessing as mp
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .config import Config, ConfigError, from_dict, to_dict
from .corpora import corpus_of, read_corpora
from .data.manifest import Item, ManifestError, write_manifest
from .figures import split_reports
from .fileio import atomic_write_text
from .parallel import available_cores

log = logging.getLogger(__name__)
CV_FILE = "cv.json"
METRICS = ("macro_f1", "uar", "accuracy")


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: who is tested, who selects the model, who trains it."""

    index: int
    name: str  # the fold's id: its number, or its value in --fold-column
    test: tuple[str, ...]  # speakers
    dev: tuple[str, ...]
    train: tuple[str, ...]


def natural_key(text: str) -> tuple:
    """'2' < '10' and 'a2' < 'a10': speakers and fold ids sort as people read them."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def speaker_of(item: Item, manifest, several: bool = False) -> str:
    """The item's speaker id as folds list it: `corpus/speaker` in a cv of several corpora, so a speaker
    id two corpora share stays two speakers."""
    if not item.speaker:
        raise ManifestError(f"{manifest}: {item.path} has no speaker; cv groups utterances by the speaker column")
    return f"{corpus_of(item)}/{item.speaker}" if several and corpus_of(item) else item.speaker


def assign_corpus_folds(items: Sequence[Item], k: int | None, manifest="manifest") -> list[tuple[str, list[str]]]:
    """Folds made within each corpus (its speakers in natural order, cut into K groups) and joined by
    number, so every fold tests every corpus and each corpus's folds are those of its own cv."""
    by_corpus: dict[str, list[Item]] = {}
    for item in items:
        by_corpus.setdefault(corpus_of(item) or "", []).append(item)
    merged: list[tuple[str, list[str]]] = []
    for corpus in sorted(by_corpus, key=natural_key):
        for n, (name, speakers) in enumerate(assign_folds(by_corpus[corpus], k, None, f"{manifest} ({corpus})")):
            if n == len(merged):
                merged.append((name, []))
            merged[n][1].extend(f"{corpus}/{speaker}" for speaker in speakers)
    return merged


def assign_folds(items: Sequence[Item], k: int | None, column: str | None,
                 manifest="manifest") -> list[tuple[str, list[str]]]:
    """(fold name, speakers) per fold. Without `column`: speakers in natural order cut into K contiguous groups
    whose sizes differ by at most one (deterministic, and e.g. RAVDESS's actors 1-4, 5-8, ...).
    With `column`: the manifest's given assignment (a published protocol); a speaker in two folds is an error."""
    if column is None:
        speakers = sorted({speaker_of(i, manifest) for i in items}, key=natural_key)
        if k is None or k < 3:
            raise ConfigError(f"--folds must be >= 3 (test, dev and at least one training fold), got {k}")
        if len(speakers) < k:
            raise ManifestError(f"{manifest}: {len(speakers)} speakers cannot fill {k} folds")
        return [(str(n), list(g)) for n, g in enumerate(np.array_split(np.array(speakers, dtype=object), k))]
    by_fold: dict[str, set[str]] = {}
    fold_of: dict[str, str] = {}
    for item in items:
        value = item.extra.get(column, "").strip()
        if not value:
            raise ManifestError(f"{manifest}: {item.path} has no value in fold column {column!r}")
        speaker = item.speaker or f"{column}={value}"  # without speakers, the fold is the group
        if fold_of.setdefault(speaker, value) != value:
            raise ManifestError(f"{manifest}: speaker {speaker} is in folds {fold_of[speaker]} and {value} "
                                f"of column {column!r}; a speaker must stay in one fold")
        by_fold.setdefault(value, set()).add(speaker)
    if len(by_fold) < 3:
        raise ManifestError(f"{manifest}: fold column {column!r} has {len(by_fold)} folds; cv needs at least 3")
    if k is not None and k != len(by_fold):
        raise ConfigError(f"--folds {k} disagrees with the {len(by_fold)} folds in column {column!r}")
    return [(name, sorted(by_fold[name], key=natural_key)) for name in sorted(by_fold, key=natural_key)]


def make_folds(assignment: list[tuple[str, list[str]]]) -> list[Fold]:
    """Test fold k, dev fold k+1 (cyclic), train the rest."""
    k, names, groups = len(assignment), [n for n, _ in assignment], [g for _, g in assignment]
    return [Fold(i, names[i], tuple(groups[i]), tuple(groups[(i + 1) % k]),
                 tuple(s for j, g in enumerate(groups) if j not in (i, (i + 1) % k) for s in g))
            for i in range(k)]


def fold_items(items: Sequence[Item], fold: Fold, column: str | None, several: bool = False) -> list[Item]:
    """The manifest's items with their split set by the fold (the original split column is ignored)."""
    role = {**{s: "test" for s in fold.test}, **{s: "dev" for s in fold.dev}, **{s: "train" for s in fold.train}}
    out = []
    for item in items:
        speaker = speaker_of(item, "", several) if item.speaker else f"{column}={item.extra.get(column, '').strip()}"
        out.append(dataclasses.replace(item, split=role[speaker], extra=dict(item.extra)))
    return out


def cv_config(config: Config) -> tuple[Config, list[str]]:
    """The config every fold trains with, and notes on what cv changed (one store for all folds)."""
    notes = []
    if config.features.normalize == "train":
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, normalize="utterance"))
        notes.append("features.normalize=train would re-extract every fold (its statistics depend on the "
                     "training speakers); cv uses features.normalize=utterance, which needs no statistics")
    return config, notes


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """Student-t 95% interval of the mean (NaNs when fewer than two values)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return float(values.mean() - half), float(values.mean() + half)


def summarize(runs: Sequence[dict], n_folds: int, seeds: Sequence[int]) -> dict:
    """Across folds (each fold's figure averaged over seeds): mean, std, 95% interval; across seeds:
    each seed's cv mean and their std (how much the whole cv moves with the seed)."""
    summary: dict = {"folds_done": 0}
    per_fold = {}
    for fold in range(n_folds):
        done = [r for r in runs if r["fold"] == fold]
        if len(done) == len(seeds):
            # every figure the runs share: categories' METRICS, attributes' mean_ccc and ccc_<name>, the
            # dev score, and macro_f1_alone of speaker-normalised models (each test clip alone)
            shared = [m for m in _figures(done[0]) if all(m in r for r in done)]
            per_fold[fold] = {m: float(np.mean([r[m] for r in done])) for m in shared}
    summary["folds_done"] = len(per_fold)
    summary["per_fold"] = {str(k): v for k, v in per_fold.items()}
    for metric in _figures(next(iter(per_fold.values()), {})):
        values = [v[metric] for v in per_fold.values() if metric in v]
        if values and len(values) == len(per_fold):
            lo, hi = interval95(values)
            summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                               else float("nan"), "ci95": [lo, hi]}
    corpora = sorted({c for r in runs for c in r.get("per_corpus", {})})
    if corpora and per_fold:
        summary["per_corpus"] = {c: _corpus_summary(runs, c, sorted(per_fold), len(seeds)) for c in corpora}
    complete = [s for s in seeds if sum(r["seed"] == s for r in runs) == n_folds]
    main = "macro_f1" if runs and "macro_f1" in runs[0] else "mean_ccc"
    if complete:
        means = [float(np.mean([r[main] for r in runs if r["seed"] == s])) for s in complete]
        summary[f"seed_{main}"] = dict(zip(map(str, complete), means))
        summary["seed_std"] = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
    return summary


def _corpus_summary(runs: Sequence[dict], corpus: str, folds: Sequence[int], n_seeds: int) -> dict:
    """One corpus's figures in a cv of several corpora: per fold (mean over seeds), mean, std, interval."""
    out: dict = {}
    for metric in next(r["per_corpus"][corpus] for r in runs if corpus in r.get("per_corpus", {})):
        values = []
        for fold in folds:
            done = [r["per_corpus"][corpus][metric] for r in runs if r["fold"] == fold and corpus in r.get("per_corpus", {})]
            values.append(float(np.mean(done)))
        lo, hi = interval95(values)
        out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else
                       float("nan"), "ci95": [lo, hi], "per_fold": values}
    return out


def _figures(run: dict) -> list[str]:
    """The figures of a run result that cv averages over folds and seeds."""
    return [k for k in run if k.removesuffix("_alone").removesuffix("_grouped") in (*METRICS, "mean_ccc")
            or k.startswith(("ccc_", "dev_"))]


def _run_result(run_dir: Path, fold: int, seed: int) -> dict:
    """One run's figures: each test clip alone first (the headline), grouped beside it for a model that
    normalises per speaker (`*_grouped`; `macro_f1_alone` repeats the headline under the name the CLI
    contract gives it); the dev figures likewise."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    alone, grouped = split_reports(metrics, "test")
    dev_alone, dev_grouped = split_reports(metrics, "dev")
    result = {"fold": fold, "seed": seed, "run": f"fold{fold}/seed{seed}", "n_test": alone["n"],
              **{m: float(alone[m]) for m in METRICS if m in alone}}
    if "attributes" in alone:
        result["mean_ccc"] = float(alone["mean_ccc"])
        result.update({f"ccc_{name}": float(r["ccc"]) for name, r in alone["attributes"].items()})
    if grouped is not None:
        result.update({f"{m}_alone": result[m] for m in ("macro_f1", "mean_ccc") if m in result})
        result.update({f"{m}_grouped": float(grouped[m]) for m in (*METRICS, "mean_ccc") if m in grouped})
    if dev_alone is not None and "macro_f1" in dev_alone:
        result["dev_macro_f1_alone"] = float(dev_alone["macro_f1"])
    if dev_grouped is not None and "macro_f1" in dev_grouped:
        result["dev_macro_f1_grouped"] = float(dev_grouped["macro_f1"])
    if "per_corpus" in alone:  # several corpora: each on its own labels, alone and grouped
        result["per_corpus"] = {c: {m: float(r[m]) for m in METRICS} for c, r in alone["per_corpus"].items()}
        for c, r in (grouped or {}).get("per_corpus", {}).items():
            result["per_corpus"][c].update({f"{m}_grouped": float(r[m]) for m in METRICS})
    result.update({k: float(v) for k, v in metrics.items() if k.startswith("dev_") and isinstance(v, (int, float))})
    result.update({"best_epoch": int(metrics["best_epoch"]), "features_computed": metrics.get("features_computed", 0)})
    return result


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


def cross_validate(manifest: str | Path, out: str | Path, config: Config, folds: int | None = 5,
                   fold_column: str | None = None, seeds: Sequence[int] = (0, 1, 2),
                   progress: bool = True, echo=print, jobs: int = 1) -> dict:
    """Train and test one model per fold and seed; write DIR/cv.json, the pooled confusion matrix and
    report.html. Resumable: finished fold/seed runs are read back, an unfinished one resumes; seeds
    may be added to a finished cv. `jobs` > 1 trains that many runs at once in spawned processes,
    splitting the CPU threads between them (small heads use 2+ threads poorly, see README)."""
    from .extraction import features_for

    out = Path(out)
    manifests = [Path(manifest)] if isinstance(manifest, (str, os.PathLike)) else [Path(m) for m in manifest]
    manifest = manifests[0] if len(manifests) == 1 else " + ".join(map(str, manifests))
    out.mkdir(parents=True, exist_ok=True)
    items, corpora = read_corpora(manifests)
    config, notes = cv_config(config)
    if corpora.several:
        if fold_column:
            raise ConfigError("--fold-column takes one corpus; with several, cv makes the folds within each corpus")
        fold_list = make_folds(assign_corpus_folds(items, folds, manifest))
        notes.append(f"{len(corpora.labels)} corpora ({', '.join(sorted(corpora.labels))}): folds are made within "
                     "each corpus by speaker, so every fold tests every corpus")
    else:
        fold_list = make_folds(assign_folds(items, folds, fold_column, manifest))
    recorded = [manifest_from(out, m) for m in manifests]
    header = {"manifest": recorded[0] if len(recorded) == 1 else recorded, "config": to_dict(config), "seeds": list(seeds),
              "fold_column": fold_column,
              "folds": [{"fold": f.index, "name": f.name, "test": list(f.test), "dev": list(f.dev)} for f in fold_list],
              "protocol": "test fold k, dev fold k+1 (cyclic), train the other folds; "
                          "each fold's figure is the mean over seeds", "notes": notes}
    _claim(out, header)
    for note in notes:
        echo(f"note: {note}")
    echo(f"cv: {len(fold_list)} folds of speakers x {len(seeds)} seeds on {manifest}; "
         "for test fold k the dev speakers are fold k+1 (cyclic), the other folds train")
    for fold in fold_list:
        echo(f"  fold {fold.name}: test {', '.join(fold.test)} | dev {', '.join(fold.dev)} | "
             f"train {len(fold.train)} speakers")
    _quiet_lightning()
    # The encoders run once, over every utterance: each fold's `train` then finds them all in the store.
    extracted = features_for([dataclasses.replace(i, split="train") for i in items], config,
                             progress=progress).speech_computed
    pending: list[tuple[Fold, int, Path]] = []
    for fold in fold_list:
        fold_manifest = out / f"fold{fold.index}" / "manifest.csv"
        if not fold_manifest.is_file():
            write_manifest(fold_items(items, fold, fold_column, corpora.several), fold_manifest)
        pending += [(fold, seed, run_dir(out, fold, seed)) for seed in seeds]
    runs = [_run_result(folder, fold.index, seed) for fold, seed, folder in pending
            if (folder / "metrics.json").is_file()]
    todo = [(fold, seed, folder) for fold, seed, folder in pending if not (folder / "metrics.json").is_file()]
    bar = tqdm(total=len(pending), initial=len(runs), desc="cv folds", unit="run", disable=not progress)
    for fold, seed, folder in _train_runs(todo, out, config, jobs):
        runs.append(_run_result(folder, fold.index, seed))
        _write(out, header, runs, len(fold_list), seeds, extracted)  # each finished run is on disk at once
        bar.set_postfix_str(f"fold {fold.name} seed {seed} done")
        bar.update()
    bar.close()
    runs.sort(key=lambda r: (r["fold"], r["seed"]))
    result = _write(out, header, runs, len(fold_list), seeds, extracted)
    write_pooled_confusion(out, runs)
    write_report(out, result)
    return result


def _quiet_lightning() -> None:
    """Lightning's per-run banner (GPU available, logger tips) and a deprecation warning of its own
    would repeat K x seeds times."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _train_one(fold_manifest: Path, folder: Path, config: Config) -> Path:
    from .experiment import train

    train(fold_manifest, folder, config, progress=False)
    return folder


def _init_job(threads: int, parent: int) -> None:
    """A cv job process: its share of the CPU threads, the same quiet logging as the parent, and
    death with the parent (Linux), so a killed cv leaves no orphan run training on its own."""
    import torch

    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    torch.set_num_threads(threads)
    _quiet_lightning()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel kills this process when its parent ends, however it ends. SIGKILL,
    because Lightning catches SIGTERM to finish its epoch; a run resumes from its last checkpoint."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _train_runs(todo: list[tuple[Fold, int, Path]], out: Path, config: Config, jobs: int):
    """Train each (fold, seed) run; yield them as they finish (in order when jobs == 1)."""
    def args(fold: Fold, seed: int, folder: Path):
        return out / f"fold{fold.index}" / "manifest.csv", folder, dataclasses.replace(config, seed=seed)

    if jobs <= 1 or len(todo) <= 1:
        for fold, seed, folder in todo:
            _train_one(*args(fold, seed, folder))
            yield fold, seed, folder
        return
    jobs = min(jobs, len(todo))
    threads = max(1, available_cores() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_job,
                             initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(_train_one, *args(*job)): job for job in todo}
        try:
            for future in as_completed(futures):
                future.result()  # a failed run stops the cv; the finished ones are already written
                yield futures[future]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _write(out: Path, header: dict, runs: list[dict], n_folds: int, seeds, extracted: int) -> dict:
    result = {**header, "features_computed_before_folds": extracted, "runs": runs,
              "summary": summarize(runs, n_folds, seeds)}
    atomic_write_text(out / CV_FILE, json.dumps(result, indent=2))
    return result


def write_pooled_confusion(out: Path, runs: Sequence[dict]) -> np.ndarray:
    """Sum of every run's test confusion matrix (all folds and seeds): CSV and row-normalised PNG."""
    from .metrics import plot_confusion, write_confusion_csv

    total, labels = None, None
    for r in runs:
        test = json.loads((out / f"fold{r['fold']}" / f"seed{r['seed']}" / "metrics.json").read_text(
            encoding="utf-8"))["test"]
        if "confusion" not in test:  # an attribute-only model has no confusion matrix
            return None
        cm = np.asarray(test["confusion"], dtype=np.int64)
        if labels is not None and test["labels"] != labels:
            raise ValueError(f"{r['run']}: labels {test['labels']} differ from the other folds' {labels}")
        labels, total = test["labels"], cm if total is None else total + cm
    write_confusion_csv(total, labels, out / "confusion.csv")
    plot_confusion(total, labels, out / "confusion.png", title="cv: all test folds and seeds")
    return total


_HEADS = {"macro_f1": "macro-F1", "uar": "UAR", "accuracy": "acc", "mean_ccc": "mean CCC", "dev_macro_f1": "dev F1",
          "dev_ccc": "dev CCC", "dev_sum": "dev sum", "macro_f1_grouped": "grouped", "mean_ccc_grouped": "CCC grp",
          "dev_macro_f1_alone": "dev alone"}


def _columns(rows: Sequence[dict]) -> list[str]:
    """The figures to tabulate, in a fixed order: categories', attributes', then the dev score."""
    present = [k for k in (rows[0] if rows else {}) if all(k in r for r in rows)]
    order = ["macro_f1", "uar", "accuracy", "macro_f1_grouped", "mean_ccc", "mean_ccc_grouped",
             *sorted(k for k in present if k.startswith("ccc_")), "dev_macro_f1_alone", "dev_macro_f1", "dev_ccc",
             "dev_sum"]
    return [k for k in order if k in present]


def format_summary(result: dict) -> str:
    """The per-fold table and the across-fold figures, as printed by `dmha cv`."""
    summary = result["summary"]
    rows = [summary["per_fold"][str(f["fold"])] for f in result["folds"] if str(f["fold"]) in summary["per_fold"]]
    columns = _columns(rows)
    heads = [_HEADS.get(c, c.replace("ccc_", "CCC ")) for c in columns]
    lines = [f"{'fold':>6} {'test speakers':28} " + " ".join(f"{h:>9}" for h in heads)]
    for fold in result["folds"]:
        row = summary["per_fold"].get(str(fold["fold"]))
        if row:
            lines.append(f"{fold['name']:>6} {','.join(fold['test'])[:28]:28} "
                         + " ".join(f"{row[c]:9.4f}" for c in columns))
    for key, name in (("macro_f1", "macro-F1"), ("mean_ccc", "mean CCC")):
        if key in summary:
            m = summary[key]
            scored = ", each test clip alone" if f"{key}_grouped" in summary else ""
            lines.append(f"{name} over {summary['folds_done']} folds{scored}: {m['mean']:.4f} ± {m['std']:.4f} (std), "
                         f"95% interval [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]")
        if f"{key}_grouped" in summary:
            m = summary[f"{key}_grouped"]
            lines.append(f"{name} grouped by test speaker (transductive: uses each test speaker's other unlabelled "
                         f"recordings): {m['mean']:.4f}, 95% interval [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]")
    for corpus, figures in summary.get("per_corpus", {}).items():
        alone, grouped = figures["macro_f1"], figures.get("macro_f1_grouped")
        lines.append(f"  {corpus} (on its own labels): macro-F1 alone {alone['mean']:.4f} "
                     f"[{alone['ci95'][0]:.4f}, {alone['ci95'][1]:.4f}]"
                     + (f", grouped {grouped['mean']:.4f}" if grouped else ""))
    for key in ("seed_macro_f1", "seed_mean_ccc"):
        if len(summary.get(key, {})) > 1:  # one seed has no spread to report
            seeds = ", ".join(f"{k}: {v:.4f}" for k, v in summary[key].items())
            lines.append(f"cv mean per seed: {seeds} (std {summary['seed_std']:.4f})")
    return "\n".join(lines)


def write_report(out: Path, result: dict) -> None:
    """A short report.html: protocol, per-fold table, summary, pooled confusion matrix."""
    esc = html.escape
    body = [f"<h1>dmha cv</h1><p>{esc(' + '.join(result['manifest']) if isinstance(result['manifest'], list) else result['manifest'])}: {len(result['folds'])} folds x "
            f"{len(result['seeds'])} seeds. {esc(result['protocol'])}.</p>"]
    body += [f"<p><b>note</b>: {esc(n)}</p>" for n in result["notes"]]
    body.append(f"<pre>{esc(format_summary(result))}</pre>")
    columns = _columns(result["runs"])
    heads = "".join(f"<th>{esc(_HEADS.get(c, c))}</th>" for c in columns)
    rows = "".join(f"<tr><td>{r['fold']}</td><td>{r['seed']}</td>" + "".join(f"<td>{r[c]:.4f}</td>" for c in columns)
                   + f"<td>{r['best_epoch']}</td></tr>" for r in result["runs"])
    body.append(f"<table border=1 cellpadding=3><tr><th>fold</th><th>seed</th>{heads}<th>best epoch</th></tr>{rows}</table>")
    if (out / "confusion.png").is_file():
        body.append('<h2>Pooled confusion (rows: true)</h2><img src="confusion.png" alt="pooled confusion matrix">')
    atomic_write_text(out / "report.html", "<!doctype html><meta charset=utf-8><title>dmha cv</title>"
                      + "".join(body) + "\n")


def read_cv(folder: str | Path) -> dict | None:
    """A cv folder's cv.json, or None when the folder is not one (for `dmha compare`)."""
    path = Path(folder) / CV_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
