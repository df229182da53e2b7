#!/usr/bin/env python
"""The speaker cross-validation of each bundled model's own recipe (issue 34: a card leads with its own recipe).

For every model of tools/ready_model.py's MODELS: its corpora's manifests restricted to its classes (the
same restriction `make ready-model` trains on), then `dmha cv` with its config (configs/ready/<name>.toml),
3 seeds, folds made within each corpus (6 when RAVDESS is among them, else 5: each corpus's usual folds),
and the linear probe (b) on exactly those folds (`benchmarks/cv_peers.py --only b`). The recipe is fixed
before this runs (no choice is read from it), so its test figures are the model's reported figures.
Then the bundled model itself (`dmha evaluate NAME`) on its own test speakers (the splits of
`dmha prepare`, the ones `make ready-model` trained with), each clip alone: per class, confusion, ECE.

    python benchmarks/bundled_cv.py [--only NAME] [--seeds 0,1,2] [--jobs 2]

Writes benchmarks/results/bundled_cv/<name>/{cv,peers,wall_s,heldout}.json (committed; the cards cite
them, tools/ready_model.py writes the cards from them). Resumable: `dmha cv` resumes finished runs, the
probe recomputes in seconds from the feature store.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import ready_model  # noqa: E402  (the bundled models' specs and their class restriction)

OUT = ROOT / "benchmarks" / "results" / "bundled_cv"
MANIFESTS = ROOT / "benchmarks" / "results" / "manifests"


def folds_for(corpora: list[str]) -> int:
    return 6 if "ravdess" in corpora else 5


def manifests(shared: Path) -> dict[str, Path]:
    """Each corpus's manifest under benchmarks/results/manifests/ (prepared when missing)."""
    out = {}
    for corpus, info in ready_model.CORPORA.items():
        path = MANIFESTS / f"{corpus}.csv"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "dmha.cli", "prepare", info["importer"],
                            str(shared / "data" / info["folder"]), "--out", str(path)], check=True, cwd=ROOT)
        out[corpus] = path
    return out


def run_cv(spec, paths: dict[str, Path], seeds: str, jobs: int) -> Path:
    out = OUT / spec.name
    command = [sys.executable, "-m", "dmha.cli", "cv", "--out", str(out), "--config", str(spec.config),
               "--folds", str(folds_for(spec.corpora)), "--seeds", seeds, "--jobs", str(jobs)]
    for corpus in spec.corpora:
        command += ["--manifest", str(ready_model.restricted(paths[corpus], spec.classes, spec.name))]
    print("$", " ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    add_wall_time(out, time.time() - start, seeds=seeds, jobs=jobs)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cv_peers.py"), str(out), "--only", "b"],
                   check=True, cwd=ROOT)
    return out


def add_wall_time(out: Path, wall: float, **about) -> None:
    """Add one invocation's seconds to OUT/wall_s.json: a resumed run adds its own time, a run that found
    everything done adds (almost) nothing; `about` says what ran (seeds, jobs, ...)."""
    timing = out / "wall_s.json"
    previous = json.loads(timing.read_text()) if timing.is_file() else {}
    total = previous.get("wall_s", 0.0) + wall
    timing.write_text(json.dumps({"wall_s": round(total, 1), "minutes": round(total / 60, 1), **about}, indent=2)
                      + "\n")


def portable(node, shared: Path):
    """The JSON with this machine's folders taken out (a committed result names none)."""
    if isinstance(node, dict):
        return {k: portable(v, shared) for k, v in node.items()}
    if isinstance(node, list):
        return [portable(v, shared) for v in node]
    if isinstance(node, str):
        for folder, name in ((ROOT / "src" / "dmha" / "pretrained", "pretrained"), (shared.resolve(), "../shared"),
                             (ROOT, ".")):
            node = node.replace(str(folder), name)
    return node


def held_out(spec, paths: dict[str, Path], shared: Path) -> Path:
    """`dmha evaluate` of the bundled model on its own test speakers, each clip alone."""
    out = OUT / spec.name / "heldout"
    command = [sys.executable, "-m", "dmha.cli", "evaluate", spec.name, "--split", "test", "--out", str(out),
               "--no-report"]
    for corpus in spec.corpora:
        command += ["--manifest", str(ready_model.restricted(paths[corpus], spec.classes, spec.name))]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    target = OUT / spec.name / "heldout.json"
    target.write_text(json.dumps(portable(metrics, shared), indent=2) + "\n", encoding="utf-8")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--only", choices=[spec.name for spec in ready_model.MODELS])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--heldout-only", action="store_true", help="only the bundled models' held-out evaluation")
    args = parser.parse_args(argv)
    paths = manifests(args.shared)
    for spec in ready_model.MODELS:
        if args.only in (None, spec.name):
            if not args.heldout_only:
                run_cv(spec, paths, args.seeds, args.jobs)
            held_out(spec, paths, args.shared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
