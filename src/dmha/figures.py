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
