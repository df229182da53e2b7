"""benchmarks/screening.py prints the dev figures of each candidate, never a test figure."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import screening  # noqa: E402


def test_the_screening_row_shows_dev_figures_only():
    per_fold = {str(k): {"dev_macro_f1_alone": 0.5 + k / 10, "macro_f1_alone": 0.111} for k in range(3)}
    cv = {"summary": {"per_fold": per_fold,
                      "dev_macro_f1_alone": {"mean": 0.6, "ci95": [0.4, 0.8]},
                      "dev_macro_f1_grouped": {"mean": 0.75, "ci95": [0.7, 0.8]},
                      "macro_f1_alone": {"mean": 0.111, "ci95": [0.1, 0.2]}}}
    row = screening.dev_row("x", cv)
    assert "0.6000" in row and "0.7500" in row and "[0.5, 0.6, 0.7]" in row
    assert "0.111" not in row  # the test figure is not printed


def test_the_committed_screening_files_are_the_candidates():
    committed = {p.stem for p in (ROOT / "benchmarks/results/ravdess_screening").glob("*.json")}
    assert committed == set(screening.CANDIDATES)
    for name in committed:
        cv = json.loads((ROOT / f"benchmarks/results/ravdess_screening/{name}.json").read_text())
        assert cv["summary"]["folds_done"] == 6 and cv["seeds"] == [0]
        changes = dict(c.split("=") for c in screening.CANDIDATES[name])
        for key, value in changes.items():  # every setting the candidate names is in the config it ran
            section, name_ = key.split(".")
            stored = cv["config"][section][name_]
            assert (stored == float(value)) if isinstance(stored, float) else str(stored) == value, key
        assert cv["config"]["encoders"]["text"] == changes.get("encoders.text", "minilm")


def test_the_committed_crema_confirmations_are_candidates_on_crema_folds():
    """CREMA-D confirmations (--corpus crema-d) are named candidates, run on CREMA-D's 5 folds with one seed."""
    paths = sorted((ROOT / "benchmarks/results/crema_screening").glob("*.json"))
    assert paths, "no CREMA-D confirmation is committed (benchmarks/results/crema_screening/)"
    for path in paths:
        assert path.stem in screening.CANDIDATES
        cv = json.loads(path.read_text())
        assert cv["summary"]["folds_done"] == 5 and cv["seeds"] == [0] and cv["manifest"] == "../manifests/crema-d.csv"
