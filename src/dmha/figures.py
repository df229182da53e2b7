"""Which score is the headline: each clip alone, and the grouped score beside it.

A model that normalises per speaker (`model.feature_norm=speaker`) can be scored two ways: each clip
alone, normalised without any other recording of its speaker (what `dmha predict` gives one file and
what public benchmarks score), and grouped by the manifest's speakers, which uses the test speaker's
other unlabelled recordings (transductive). Every report leads with the first. `train` and
`evaluate` write `{split}` (alone) and `{split}_grouped`; a metrics.json from before this order
had `{split}` grouped and `{split}_alone`, and reads back the same way through `split_reports`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

ALONE = "each clip alone (inductive: what `dmha predict` gives one file)"
GROUPED = "grouped by speaker: uses the test speaker's other unlabelled recordings (transductive)"
SCORING = {"headline": "alone", "alone": ALONE, "grouped": GROUPED}


def split_reports(metrics: dict, split: str) -> tuple[dict | None, dict | None]:
    """(alone, grouped) reports of one split of a metrics.json; grouped is None for a model without
    speaker statistics (its one score is both)."""
    if "scoring" in metrics:
        return metrics.get(split), metrics.get(f"{split}_grouped")
    if f"{split}_alone" in metrics:  # written before the alone headline: `split` was grouped
        return metrics[f"{split}_alone"], metrics.get(split)
    return metrics.get(split), None


def predictions_file(run_dir: str | Path, variant: str = "alone") -> Path:
    """A `dmha train` run's test predictions scored `alone` or `grouped`: eval_test/ and eval_test_grouped/;
    eval_test_alone/ and eval_test/ in a run from before the alone headline; eval_test/ for both in a
    model without speaker statistics."""
    run_dir = Path(run_dir)
    if (run_dir / "eval_test_grouped").is_dir():
        folder = "eval_test" if variant == "alone" else "eval_test_grouped"
    elif (run_dir / "eval_test_alone").is_dir():
        folder = "eval_test_alone" if variant == "alone" else "eval_test"
    else:
        folder = "eval_test"
    return run_dir / folder / "predictions.csv"


# The figures a run's metrics.json holds: categories (higher is better), calibration (lower is better),
# attributes; how reports name them; the logged dev score each dev criterion follows in training.
CATEGORY = ("macro_f1", "uar", "accuracy")
CALIBRATION = ("ece", "brier")
HIGHER_IS_BETTER = {**{m: True for m in (*CATEGORY, "mean_ccc")}, **{m: False for m in CALIBRATION}}
DISPLAY = {"macro_f1": "macro-F1", "uar": "UAR", "accuracy": "acc", "ece": "ECE", "brier": "Brier",
           "mean_ccc": "mean CCC", "macro_f1_grouped": "grouped", "mean_ccc_grouped": "CCC grp",
           "dev_macro_f1": "dev F1", "dev_macro_f1_alone": "dev alone",
           "dev_macro_f1_grouped": "dev grp", "dev_ece_alone": "dev ECE", "dev_ccc": "dev CCC", "dev_sum": "dev sum"}
MONITORS = {"macro_f1": "val_macro_f1", "ccc": "val_ccc", "sum": "val_sum"}


def display(name: str) -> str:
    """How a report names a figure."""
    return DISPLAY.get(name, name.replace("ccc_", "CCC "))


def run_figures(metrics: dict) -> dict:
    """One run's figures from its metrics.json: each test clip alone first (the headline), grouped beside
    it for a model that normalises per speaker (`*_grouped`; `macro_f1_alone` repeats the headline under
    the name the CLI contract gives it), calibration, attributes, per corpus, the dev figures."""
    alone, grouped = split_reports(metrics, "test")
    dev_alone, dev_grouped = split_reports(metrics, "dev")
    result = {"n_test": alone["n"], **{m: float(alone[m]) for m in (*CATEGORY, *CALIBRATION) if m in alone}}
    if "attributes" in alone:
        result["mean_ccc"] = float(alone["mean_ccc"])
        result.update({f"ccc_{name}": float(r["ccc"]) for name, r in alone["attributes"].items()})
    if grouped is not None:
        result.update({f"{m}_alone": result[m] for m in ("macro_f1", "mean_ccc") if m in result})
        result.update({f"{m}_grouped": float(grouped[m]) for m in (*CATEGORY, "mean_ccc") if m in grouped})
    if dev_alone is not None and "macro_f1" in dev_alone:
        result["dev_macro_f1_alone"] = float(dev_alone["macro_f1"])
    if dev_grouped is not None and "macro_f1" in dev_grouped:
        result["dev_macro_f1_grouped"] = float(dev_grouped["macro_f1"])
    if "per_corpus" in alone:  # several corpora: each on its own labels, alone and grouped
        result["per_corpus"] = {c: {m: float(r[m]) for m in (*CATEGORY, *CALIBRATION) if m in r}
                                for c, r in alone["per_corpus"].items()}
        for c, r in (grouped or {}).get("per_corpus", {}).items():
            result["per_corpus"][c].update({f"{m}_grouped": float(r[m]) for m in CATEGORY})
    result.update({k: float(v) for k, v in metrics.items() if k.startswith("dev_") and isinstance(v, (int, float))})
    result.update({"best_epoch": int(metrics["best_epoch"]), "features_computed": metrics.get("features_computed", 0)})
    return result


def dev_figures(metrics: dict) -> dict:
    """One dev-only run's figures (`dmha cv --dev-only`): the dev split's, each clip alone and grouped,
    every name prefixed `dev_`, so a cv.json made of them holds no test figure; a run with a test split
    is refused (its test figures would be read by whoever chooses)."""
    if "test" in metrics or "test_grouped" in metrics:
        raise ValueError("a dev-only cv run must have no test split (its metrics.json has one)")
    alone, grouped = split_reports(metrics, "dev")
    result = {"n_dev": alone["n"], **{f"dev_{m}_alone": float(alone[m]) for m in (*CATEGORY, *CALIBRATION) if m in alone}}
    if "attributes" in alone:
        result["dev_mean_ccc_alone"] = float(alone["mean_ccc"])
    if grouped is not None:
        result.update({f"dev_{m}_grouped": float(grouped[m]) for m in (*CATEGORY, "mean_ccc") if m in grouped})
    if "per_corpus" in alone:
        result["per_corpus"] = {c: {f"dev_{m}_alone": float(r[m]) for m in CATEGORY} for c, r in alone["per_corpus"].items()}
        for c, r in (grouped or {}).get("per_corpus", {}).items():
            result["per_corpus"][c].update({f"dev_{m}_grouped": float(r[m]) for m in CATEGORY})
    result.update({k: float(v) for k, v in metrics.items() if k.startswith("dev_") and isinstance(v, (int, float))})
    result.update({"best_epoch": int(metrics["best_epoch"]), "features_computed": metrics.get("features_computed", 0)})
    return result


def averaged_figures(run: dict) -> list[str]:
    """The figures of a run that a cv averages over folds and seeds."""
    base = (*CATEGORY, *CALIBRATION, "mean_ccc")
    return [k for k in run if k.removesuffix("_alone").removesuffix("_grouped") in base or k.startswith(("ccc_", "dev_"))]


def table_columns(rows: Sequence[dict]) -> list[str]:
    """The figures to tabulate, in a fixed order: the headline's, grouped, attributes', calibration, dev."""
    present = [k for k in (rows[0] if rows else {}) if all(k in r for r in rows)]
    order = ["macro_f1", "uar", "accuracy", "macro_f1_grouped", "mean_ccc", "mean_ccc_grouped",
             *sorted(k for k in present if k.startswith("ccc_")), "ece", "dev_macro_f1_alone", "dev_macro_f1_grouped",
             "dev_ece_alone", "dev_macro_f1", "dev_ccc", "dev_sum"]
    return [k for k in order if k in present]
