"""What a cross-validation reports: figures across folds (each fold's the mean over its seeds) with a
Student-t 95% interval, per corpus and per seed; the printed table, report.html and the pooled confusion."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .figures import averaged_figures, display, table_columns
from .fileio import atomic_write_text


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
            shared = [m for m in averaged_figures(done[0]) if all(m in r for r in done)]
            per_fold[fold] = {m: float(np.mean([r[m] for r in done])) for m in shared}
    summary["folds_done"] = len(per_fold)
    summary["per_fold"] = {str(k): v for k, v in per_fold.items()}
    for metric in averaged_figures(next(iter(per_fold.values()), {})):
        values = [v[metric] for v in per_fold.values() if metric in v]
        if values and len(values) == len(per_fold):
            lo, hi = interval95(values)
            summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                               else float("nan"), "ci95": [lo, hi]}
    corpora = sorted({c for r in runs for c in r.get("per_corpus", {})})
    if corpora and per_fold:
        summary["per_corpus"] = {c: _corpus_summary(runs, c, sorted(per_fold), len(seeds)) for c in corpora}
    complete = [s for s in seeds if sum(r["seed"] == s for r in runs) == n_folds]
    main = next((m for m in ("macro_f1", "mean_ccc", "dev_macro_f1_alone", "dev_mean_ccc_alone")
                 if runs and m in runs[0]), None)
    if complete and main:
        means = [float(np.mean([r[main] for r in runs if r["seed"] == s])) for s in complete]
        summary[f"seed_{main}"] = dict(zip(map(str, complete), means))
        summary["seed_std"] = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
    return summary


def _corpus_summary(runs: Sequence[dict], corpus: str, folds: Sequence[int], n_seeds: int) -> dict:
    """One corpus's figures in a cv of several corpora: per fold (mean over seeds), mean, std, interval."""
    out: dict = {}
    reports = [r["per_corpus"][corpus] for r in runs if corpus in r.get("per_corpus", {})]
    for metric in [m for m in reports[0] if all(m in report for report in reports)]:  # runs of older dmha lack some
        values = []
        for fold in folds:
            done = [r["per_corpus"][corpus][metric] for r in runs if r["fold"] == fold and corpus in r.get("per_corpus", {})]
            values.append(float(np.mean(done)))
        lo, hi = interval95(values)
        out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else
                       float("nan"), "ci95": [lo, hi], "per_fold": values}
    return out


def write_pooled_confusion(out: Path, runs: Sequence[dict]) -> np.ndarray:
    """Sum of every run's test confusion matrix (all folds and seeds): CSV and row-normalised PNG. Folds
    whose models know different labels (leave-one-corpus-out) are summed over the union of their labels."""
    from .metrics import plot_confusion, write_confusion_csv

    matrices = []
    for r in runs:
        test = json.loads((out / f"fold{r['fold']}" / f"seed{r['seed']}" / "metrics.json").read_text(
            encoding="utf-8"))["test"]
        if "confusion" not in test:  # an attribute-only model has no confusion matrix
            return None
        matrices.append((test["labels"], np.asarray(test["confusion"], dtype=np.int64)))
    labels = list(dict.fromkeys(label for own, _ in matrices for label in own))
    total = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for own, cm in matrices:
        at = [labels.index(label) for label in own]
        total[np.ix_(at, at)] += cm
    write_confusion_csv(total, labels, out / "confusion.csv")
    plot_confusion(total, labels, out / "confusion.png", title="cv: all test folds and seeds")
    return total


def format_summary(result: dict) -> str:
    """The per-fold table and the across-fold figures, as printed by `dmha cv`."""
    summary = result["summary"]
    rows = [summary["per_fold"][str(f["fold"])] for f in result["folds"] if str(f["fold"]) in summary["per_fold"]]
    columns = table_columns(rows)
    heads = [display(c) for c in columns]
    role = "test" if not result.get("dev_only") else "dev"  # a dev-only cv names no test speaker
    lines = [f"{'fold':>6} {role + ' speakers':28} " + " ".join(f"{h:>9}" for h in heads)]
    for fold in result["folds"]:
        row = summary["per_fold"].get(str(fold["fold"]))
        if row:
            lines.append(f"{fold['name']:>6} {','.join(fold[role])[:28]:28} "
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
    if result.get("dev_only") and "dev_macro_f1_alone" in summary:
        m, g = summary["dev_macro_f1_alone"], summary.get("dev_macro_f1_grouped")
        lines.append(f"dev macro-F1 over {summary['folds_done']} folds, each dev clip alone: {m['mean']:.4f} ± "
                     f"{m['std']:.4f} (std), 95% interval [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]"
                     + (f"; grouped by dev speaker {g['mean']:.4f}" if g else "")
                     + " (dev only: the held-out folds were never trained on, scored or written)")
    prefix = "dev_" if result.get("dev_only") else ""
    for corpus, figures in summary.get("per_corpus", {}).items():
        alone = figures[f"{prefix}macro_f1_alone" if prefix else "macro_f1"]
        grouped = figures.get(f"{prefix}macro_f1_grouped")
        lines.append(f"  {corpus} (on its own labels): {prefix.replace('_', ' ')}macro-F1 alone {alone['mean']:.4f} "
                     f"[{alone['ci95'][0]:.4f}, {alone['ci95'][1]:.4f}]"
                     + (f", grouped {grouped['mean']:.4f}" if grouped else ""))
    for key in ("seed_macro_f1", "seed_mean_ccc", "seed_dev_macro_f1_alone", "seed_dev_mean_ccc_alone"):
        if len(summary.get(key, {})) > 1:  # one seed has no spread to report
            seeds = ", ".join(f"{k}: {v:.4f}" for k, v in summary[key].items())
            lines.append(f"cv mean per seed: {seeds} (std {summary['seed_std']:.4f})")
    return "\n".join(lines)


def write_cv_report(out: Path, result: dict) -> None:
    """A short report.html: protocol, per-fold table, summary, pooled confusion matrix (not evaluate's
    report.html, which dmha.report writes)."""
    esc = html.escape
    body = [f"<h1>dmha cv</h1><p>{esc(' + '.join(result['manifest']) if isinstance(result['manifest'], list) else result['manifest'])}: {len(result['folds'])} folds x "
            f"{len(result['seeds'])} seeds. {esc(result['protocol'])}.</p>"]
    body += [f"<p><b>note</b>: {esc(n)}</p>" for n in result["notes"]]
    body.append(f"<pre>{esc(format_summary(result))}</pre>")
    columns = table_columns(result["runs"])
    heads = "".join(f"<th>{esc(display(c))}</th>" for c in columns)
    rows = "".join(f"<tr><td>{r['fold']}</td><td>{r['seed']}</td>" + "".join(f"<td>{r[c]:.4f}</td>" for c in columns)
                   + f"<td>{r['best_epoch']}</td></tr>" for r in result["runs"])
    body.append(f"<table border=1 cellpadding=3><tr><th>fold</th><th>seed</th>{heads}<th>best epoch</th></tr>{rows}</table>")
    if (out / "confusion.png").is_file():
        body.append('<h2>Pooled confusion (rows: true)</h2><img src="confusion.png" alt="pooled confusion matrix">')
    atomic_write_text(out / "report.html", "<!doctype html><meta charset=utf-8><title>dmha cv</title>"
                      + "".join(body) + "\n")
