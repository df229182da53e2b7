"""benchmarks/screening.py chooses on dev only: its cvs compute no test figure, its records hold none."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import screening  # noqa: E402
from dmha.cv import figures_about_test  # noqa: E402

SCREENING = sorted(ROOT.glob("benchmarks/results/*_screening/*.json"))


def test_screening_runs_dev_only_cvs():
    command = screening.cv_command("m.csv", Path("runs/x"), 6, ["a.b=1"])
    assert command[2:4] == ["dmha.cli", "cv"] and "--dev-only" in command and command[-2:] == ["--set", "a.b=1"]


@pytest.mark.parametrize("path", SCREENING, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_committed_screening_record_holds_a_test_figure(path):
    cv = json.loads(path.read_text())
    assert figures_about_test(cv) == [], f"{path.name} holds test figures: a choice must be made on dev only"
    assert cv.get("dev_only"), f"{path.name} does not say it is dev-only"


def test_there_are_screening_records():
    assert len(SCREENING) >= 7, "the screening records are missing: the parametrised check above ran on nothing"


def test_a_record_with_a_test_figure_is_refused(tmp_path):
    cv = json.loads(SCREENING[0].read_text())
    cv["runs"][0]["macro_f1"] = 0.5  # one test figure slipped in
    with pytest.raises(SystemExit, match="test figures"):
        screening.write_choice(tmp_path / "x.json", cv)
    assert not (tmp_path / "x.json").exists()


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
    assert "subsets" in {p.stem for p in paths}, "the confirmations' baseline (the subsets recipe) is missing"
