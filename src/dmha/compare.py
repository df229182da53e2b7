"""`dmha compare`: one table of metrics across training runs and evaluation folders."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from .cv import CV_FILE
from .figures import split_reports
from .fileio import atomic_write_text

# The figures come from dmha.figures (each clip alone first, then grouped by speaker, calibration, attributes).
FIGURES = ("macro_f1", "macro_f1_ci95", "accuracy", "uar", "macro_f1_grouped", "ece", "mean_ccc", "dev_macro_f1")
COLUMNS = ("run", "split", "n", *FIGURES, "best_epoch", "speech_encoder", "attention", "loss", "decision")


class CompareError(ValueError):
    """A folder that holds no dmha metrics."""


def _config_of(folder: Path, metrics: dict) -> dict:
    """The training config behind a run folder (its config.json) or an evaluation (its model's)."""
    candidates = [folder / "config.json"]
    if metrics.get("model"):
        candidates.append(Path(metrics["model"]) / "config.json")
    for path in candidates:
        if path.is_file():
            payload = json.loads(path.read_text(encoding="utf-8"))
            return payload.get("config", payload)  # model dirs nest the config; run dirs do not
    return {}


def collect(folders: Sequence[str | Path]) -> list[dict]:
    """One row per folder, from its metrics.json (written by `train` or `evaluate`)."""
    rows = []
    for folder in map(Path, folders):
        if (folder / CV_FILE).is_file():
            rows.append(_cv_row(folder))
            continue
        path = folder / "metrics.json"
        if not path.is_file():
            raise CompareError(f"{folder}: no metrics.json or cv.json (expected a `dmha train`, `evaluate` or `cv` --out folder)")
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise CompareError(f"{path}: not valid JSON ({err})") from err
        config = _config_of(folder, metrics)
        decision = metrics.get("decision") or {}
        if metrics.get("ensemble"):
            kind = "ensemble of " + str(len(metrics.get("members", {})))
            speech, attention, loss = kind, "-", "-"
        else:
            speech = config.get("encoders", {}).get("speech", "-")
            attention = config.get("model", {}).get("attention", "-")
            loss = config.get("loss", "-")
        split = metrics.get("split", "test")
        _, grouped = split_reports(metrics, split)  # train's metrics.json, or evaluate's ("grouped")
        grouped = grouped or metrics.get("grouped") or {}
        rows.append({
            "run": folder.name if folder.name not in ("", ".") else str(folder), "split": metrics.get("split", "-"),
            "n": metrics.get("n", "-"), "macro_f1": metrics.get("macro_f1"), "macro_f1_ci95": "-", "accuracy": metrics.get("accuracy"),
            "uar": metrics.get("uar"), "macro_f1_grouped": grouped.get("macro_f1", "-"), "ece": metrics.get("ece", "-"),
            "mean_ccc": metrics.get("mean_ccc", "-"),
            "dev_macro_f1": metrics.get("dev_macro_f1", "-"),
            "best_epoch": metrics.get("best_epoch", "-"), "speech_encoder": speech, "attention": attention,
            "loss": loss,
            "decision": _decision_name(decision),
        })
    return rows


def _cv_row(folder: Path) -> dict:
    """A `dmha cv` folder: figures are means over folds (each averaged over seeds), with the 95% interval."""
    try:
        result = json.loads((folder / CV_FILE).read_text(encoding="utf-8"))
        summary, config = result["summary"], result["config"]
    except (ValueError, KeyError) as err:
        raise CompareError(f"{folder / CV_FILE}: not a valid cv result ({err})") from err
    if not summary.get("folds_done"):
        raise CompareError(f"{folder / CV_FILE}: no finished fold yet")
    mean = lambda key: summary[key]["mean"] if key in summary else "-"  # noqa: E731  (attribute-only: no macro-F1)
    lo, hi = summary["macro_f1"]["ci95"] if "macro_f1" in summary else (float("nan"), float("nan"))
    return {"run": folder.name or str(folder), "split": f"cv {summary['folds_done']}x{len(result['seeds'])}",
            "n": sum(r["n_test"] for r in result["runs"] if r["seed"] == result["seeds"][0]),
            "macro_f1": mean("macro_f1"), "macro_f1_ci95": f"[{lo:.4f}, {hi:.4f}]", "accuracy": mean("accuracy"),
            "uar": mean("uar"), "macro_f1_grouped": mean("macro_f1_grouped"), "ece": mean("ece"),
            "mean_ccc": mean("mean_ccc"), "dev_macro_f1": mean("dev_macro_f1"),
            "best_epoch": round(float(sum(r["best_epoch"] for r in result["runs"]) / len(result["runs"])), 1),
            "speech_encoder": config["encoders"]["speech"], "attention": config["model"]["attention"],
            "loss": config["loss"], "decision": "argmax"}


def _decision_name(decision: dict) -> str:
    """`argmax`, `thresholds`, `prior=uniform` or `prior=uniform+thresholds` (train runs: argmax)."""
    parts = [f"prior={decision['prior']}"] if decision.get("prior", "none") != "none" else []
    parts += ["thresholds"] if decision.get("thresholds") else []
    return "+".join(parts) or "argmax"


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [list(COLUMNS)] + [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_table(rows: Sequence[dict], path: str | Path) -> None:
    """CSV, Markdown or JSON, by the file's extension."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(list(rows), indent=2)
    elif path.suffix == ".md":
        text = format_table(rows) + "\n"
    elif path.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        raise CompareError(f"{path}: unknown table format (use .csv, .md or .json)")
    atomic_write_text(path, text)
