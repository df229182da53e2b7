#!/usr/bin/env python
"""Copy the demo's example clips from the shared CREMA-D copy into src/dmha/examples/, by a fixed rule.

The rule, so nobody picks clips by how well dmha does on them: among the clips of CREMA-D's test
actors (the split `dmha prepare crema-d` gives: actors the bundled model never trained on), for each of
the six emotions the clip whose acted emotion the crowd's audio-only raters chose most often (votes for
it / raters), ties broken by a length closest to 2.5 s, then by file name. The clips are copied
unchanged (16 kHz mono FLAC); clips.csv lists them with their label, actor and crowd agreement.

    python tools/pick_examples.py [--crema ../shared/data/crema-d]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "dmha" / "examples"


def pick(manifest: Path) -> list[dict]:
    rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
    best: dict[str, tuple] = {}
    for row in sorted((r for r in rows if r["split"] == "test"), key=lambda r: r["path"]):
        label = row["label"]
        agreement = int(row[f"votes_{label}"]) / int(row["votes_n"])
        key = (agreement, -abs(float(row["duration_s"]) - 2.5))
        if label not in best or key > best[label][0]:
            best[label] = (key, row)
    return [best[label][1] for label in sorted(best)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crema", default=str(ROOT.parent / "shared" / "data" / "crema-d"))
    args = parser.parse_args()
    source = Path(args.crema)
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "clips.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "speaker", "sex", "sentence", "transcript", "duration_s",
                         "crowd_agreement", "sha256"])
        for row in pick(source / "manifest.csv"):
            name = Path(row["path"]).name
            shutil.copyfile(source / row["path"], OUT / name)
            digest = hashlib.sha256((OUT / name).read_bytes()).hexdigest()
            agreement = int(row[f"votes_{row['label']}"]) / int(row["votes_n"])
            writer.writerow([name, row["label"], row["speaker"], row["sex"], row["sentence"], row["transcript"],
                             row["duration_s"], f"{agreement:.3f}", digest])
            print(f"{name}: {row['label']} (crowd agreement {agreement:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
