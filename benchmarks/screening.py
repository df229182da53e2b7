#!/usr/bin/env python
"""Recipe screening on the dev folds only (issue 27's rule: choose on dev, report test once).

Each candidate is a `dmha cv` of RAVDESS (6 speaker folds, one seed) with a few `--set` changes; its
cv.json is copied to benchmarks/results/ravdess_screening/<name>.json and the table printed here shows
the **dev** figures only (each dev clip alone, and grouped), so a choice is never read off the test
folds. The test figures stay in the JSON, to be looked at once the choice is fixed.

    python benchmarks/screening.py [--corpus ravdess|crema-d] [--manifest M.csv] [--only NAME]

`--corpus crema-d` runs a candidate on CREMA-D's 5 speaker folds instead (benchmarks/results/crema_screening/),
the confirmation a change kept on RAVDESS dev must pass; its baseline is seed 0 of benchmarks/results/crema_cv.
Resumable: `dmha cv` resumes each candidate's finished runs (under <folder>/runs/).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ravdess")
    parser.add_argument("--manifest", help="default: benchmarks/results/manifests/<the corpus's manifest>")
    parser.add_argument("--only", choices=sorted(CANDIDATES))
    args = parser.parse_args(argv)
    prefix, manifest_name, folds = CORPORA[args.corpus]
    out = RESULTS / f"{prefix}_screening"
    manifest = args.manifest or str(RESULTS / "manifests" / manifest_name)
    for name, changes in CANDIDATES.items():
        if args.only not in (None, name):
            continue
        runs = out / "runs" / name
        command = [sys.executable, "-m", "dmha.cli", "cv", "--manifest", manifest, "--out", str(runs),
                   "--folds", str(folds), "--seeds", "0", "--jobs", "2"]
        for change in changes:
            command += ["--set", change]
        subprocess.run(command, check=True, cwd=ROOT)
        cv = json.loads((runs / "cv.json").read_text(encoding="utf-8"))
        cv["manifest"] = f"../manifests/{manifest_name}"
        (out / f"{name}.json").write_text(json.dumps(cv, indent=2) + "\n", encoding="utf-8")
    for name in CANDIDATES:
        path = out / f"{name}.json"
        if path.is_file():
            print(dev_row(name, json.loads(path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
