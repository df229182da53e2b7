#!/usr/bin/env python
"""Leave-one-corpus-out over the shared corpora (issue 35, item 2): the protocol a transfer recipe is developed on.

For a bundled model's recipe (configs/ready/<name>.toml, its six classes): every shared corpus's manifest
(RAVDESS, CREMA-D, EmoSpeech) restricted to those classes (EmoSpeech offers four of them), then
`dmha cv --leave-corpus-out` (fold k trains on the other corpora, the epoch chosen on their dev speakers,
and scores every clip of corpus k, each alone) and the linear probe (b) on exactly those folds
(`benchmarks/cv_peers.py --only b`: layer and C chosen on the same dev speakers).

    python benchmarks/loco.py [--recipe dmha-acted-en] [--seeds 0,1,2] [--jobs 2] [--set KEY=VALUE ...] [--tag NAME]

`--set` varies the recipe (a candidate of item 3) and `--tag` names its folder. Writes
benchmarks/results/loco/<tag>/{cv,peers,wall_s}.json (committed; run folders beside them are not).
Resumable: `dmha cv` resumes finished runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bundled_cv  # noqa: E402  (the shared corpora's manifests, made portable JSON)
import ready_model  # noqa: E402  (the bundled recipes and their classes)

OUT = ROOT / "benchmarks" / "results" / "loco"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--recipe", default="dmha-acted-en", choices=[s.name for s in ready_model.MODELS])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a candidate's config change")
    parser.add_argument("--tag", help="the result folder's name (default: the recipe's)")
    parser.add_argument("--table", action="store_true", help="print the committed result's Markdown rows and stop")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(table_rows(args.tag or args.recipe)))
        return 0
    spec = next(s for s in ready_model.MODELS if s.name == args.recipe)
    paths = bundled_cv.manifests(args.shared)
    out = OUT / (args.tag or spec.name)
    command = [sys.executable, "-m", "dmha.cli", "cv", "--leave-corpus-out", "--out", str(out), "--config",
               str(spec.config), "--seeds", args.seeds, "--jobs", str(args.jobs)]
    for corpus in ready_model.CORPORA:
        command += ["--manifest", str(ready_model.restricted(paths[corpus], spec.classes, spec.name, every_class=False))]
    for override in args.set:
        command += ["--set", override]
    print("$", " ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    bundled_cv.add_wall_time(out, time.time() - start, seeds=args.seeds, jobs=args.jobs, recipe=spec.name,
                             set=args.set)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cv_peers.py"), str(out), "--only", "b"],
                   check=True, cwd=ROOT)
    for name in ("cv.json", "peers.json"):
        path = out / name
        if path.is_file():
            path.write_text(json.dumps(bundled_cv.portable(json.loads(path.read_text()), args.shared), indent=2) + "\n")
    print(f"wrote {out}/cv.json, peers.json, wall_s.json")
    return 0


def table_rows(tag: str, link_base: str = "../results/loco/") -> list[str]:
    """Markdown rows of one committed leave-one-corpus-out result (each figure a link to its JSON key):
    corpus left out, dmha alone, grouped, probe (b), the difference, ECE, Brier."""
    folder = OUT / tag
    cv = json.loads((folder / "cv.json").read_text())
    peers = json.loads((folder / "peers.json").read_text())

    def link(file: str, key: str, value: float, sign: bool = False) -> str:
        text = f"{value:+.3f}".replace("-", "−") if sign else f"{value:.3f}"
        return f"[{text}]({link_base}{tag}/{file}#{key})"

    rows = []
    for k, fold in enumerate(cv["folds"]):
        mine, probe = cv["summary"]["per_fold"][str(k)], peers["peers"]["b"]["per_fold"][k]
        diff = peers["peers"]["b"]["difference"]["alone"]["per_fold"][k]
        rows.append(" | ".join([f"| {fold['name']}", link("cv.json", f"summary.per_fold.{k}.macro_f1", mine["macro_f1"]),
                                link("cv.json", f"summary.per_fold.{k}.macro_f1_grouped", mine["macro_f1_grouped"]),
                                link("peers.json", f"peers.b.per_fold.{k}.macro_f1", probe["macro_f1"]),
                                link("peers.json", f"peers.b.difference.alone.per_fold.{k}", diff, sign=True),
                                link("cv.json", f"summary.per_fold.{k}.ece", mine["ece"]),
                                link("cv.json", f"summary.per_fold.{k}.brier", mine["brier"])]) + " |")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
