#!/usr/bin/env python
"""Recipe screening on the dev folds only (issue 27's rule: choose on dev, report test once).

Each candidate is a `dmha cv --dev-only` of RAVDESS (6 speaker folds, one seed) with a few `--set`
changes: the same folds and dev speakers as the test cv, but each fold's test speakers are in no run's
manifest, so no test figure is computed, printed or written. Its cv.json is copied to
benchmarks/results/ravdess_screening/<name>.json (refused if it holds any test figure:
`dmha.cv.figures_about_test`) and the table printed here shows the dev figures (each dev clip alone, and
grouped). The test cv of the chosen recipe is a separate run, after the choice (`make bench`).

    python benchmarks/screening.py [--corpus ravdess|crema-d] [--manifest M.csv] [--only NAME]
    python benchmarks/screening.py --strip-committed   # legacy full-cv JSONs -> their dev figures only

`--corpus crema-d` runs a candidate on CREMA-D's 5 speaker folds instead (benchmarks/results/crema_screening/),
the confirmation a change kept on RAVDESS dev must pass, against the `subsets` candidate run the same way.
Until issue 34 the candidates ran as full cvs (test figures computed and printed, then left in the JSONs);
`--strip-committed` reduced those JSONs to their dev figures (`dmha.cv.dev_only_view`, which says so in
each file's `dev_only`), and docs/benchmarks/results.md says what was seen when. Resumable: `dmha cv` resumes each candidate's finished runs (under <folder>/runs/).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from dmha.cv import dev_only_view, figures_about_test  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# corpus → (results folder prefix, manifest under benchmarks/results/manifests, speaker folds)
CORPORA = {"ravdess": ("ravdess", "ravdess.csv", 6), "crema-d": ("crema", "crema-d.csv", 5)}
# Each candidate names every setting it changes from dmha's defaults of the time (speaker_stats was `all`
# until this screening chose `subsets`), so re-running gives the same configs whatever the defaults are now.
CANDIDATES = {
    "previous_default": ["train.speaker_stats=all"],
    "subsets": ["train.speaker_stats=subsets"],
    "subsets_notext": ["train.speaker_stats=subsets", "encoders.text=none"],
    # two settings of the subsets recipe that shift it further toward the clip alone, tried after it was kept
    "subsets_alone80": ["train.speaker_stats=subsets", "train.alone_share=0.8"],
    "subsets_prior3000": ["train.speaker_stats=subsets", "model.speaker_prior_frames=3000"],
}


def dev_row(name: str, cv: dict) -> str:
    s = cv["summary"]
    per_fold = [round(v["dev_macro_f1_alone"], 3) for _, v in sorted(s["per_fold"].items(), key=lambda kv: int(kv[0]))]
    alone, grouped = s["dev_macro_f1_alone"], s["dev_macro_f1_grouped"]
    return (f"{name:16} dev alone {alone['mean']:.4f} [{alone['ci95'][0]:.3f}, {alone['ci95'][1]:.3f}]  "
            f"dev grouped {grouped['mean']:.4f}  per fold {per_fold}")


LEGACY = ("stripped by `benchmarks/screening.py --strip-committed` from a full cv run of the time (before "
          "`dmha cv --dev-only`): that run also computed and printed test figures; only its dev figures are kept")


def cv_command(manifest: str, runs: Path, folds: int, changes: list[str]) -> list[str]:
    """A candidate's `dmha cv --dev-only` (one seed, the corpus's folds)."""
    command = [sys.executable, "-m", "dmha.cli", "cv", "--manifest", manifest, "--out", str(runs),
               "--folds", str(folds), "--seeds", "0", "--jobs", "2", "--dev-only"]
    for change in changes:
        command += ["--set", change]
    return command


def write_choice(path: Path, cv: dict) -> None:
    """A candidate's dev-only record; a JSON with any test figure is refused (choose on dev only)."""
    leaked = figures_about_test(cv)
    if leaked:
        raise SystemExit(f"{path}: refusing to write a screening record with test figures ({', '.join(leaked[:3])} ...)")
    path.write_text(json.dumps(cv, indent=2) + "\n", encoding="utf-8")


def strip_committed() -> None:
    baseline = RESULTS / "crema_screening" / "subsets.json"
    if not baseline.is_file():  # the confirmations' baseline was seed 0 of the CREMA-D test cv (a full cv)
        cv = json.loads((RESULTS / "crema_cv" / "cv.json").read_text(encoding="utf-8"))
        cv = {**cv, "seeds": [0], "runs": [r for r in cv["runs"] if r["seed"] == 0]}
        how = LEGACY.replace("a full cv run of the time", "seed 0 of benchmarks/results/crema_cv (a full cv run)")
        write_choice(baseline, dev_only_view(cv, how))
        print(f"{baseline.relative_to(ROOT)}: the CREMA-D baseline, from seed 0 of crema_cv")
    for path in sorted(RESULTS.glob("*_screening/*.json")):
        cv = json.loads(path.read_text(encoding="utf-8"))
        if figures_about_test(cv):
            write_choice(path, dev_only_view(cv, LEGACY))
            print(f"{path.relative_to(ROOT)}: reduced to its dev figures")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ravdess")
    parser.add_argument("--manifest", help="default: benchmarks/results/manifests/<the corpus's manifest>")
    parser.add_argument("--only", choices=sorted(CANDIDATES))
    parser.add_argument("--strip-committed", action="store_true",
                        help="reduce the committed legacy (full-cv) screening JSONs to their dev figures, and record "
                             "the CREMA-D baseline (seed 0 of crema_cv) the same way")
    args = parser.parse_args(argv)
    if args.strip_committed:
        strip_committed()
        return 0
    prefix, manifest_name, folds = CORPORA[args.corpus]
    out = RESULTS / f"{prefix}_screening"
    manifest = args.manifest or str(RESULTS / "manifests" / manifest_name)
    for name, changes in CANDIDATES.items():
        if args.only not in (None, name):
            continue
        runs = out / "runs" / name
        subprocess.run(cv_command(manifest, runs, folds, changes), check=True, cwd=ROOT)
        cv = json.loads((runs / "cv.json").read_text(encoding="utf-8"))
        cv["manifest"] = f"../manifests/{manifest_name}"
        write_choice(out / f"{name}.json", cv)
    for name in CANDIDATES:
        path = out / f"{name}.json"
        if path.is_file():
            print(dev_row(name, json.loads(path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
