#!/usr/bin/env python
"""`dmha demo` (the synthetic eSpeak corpus) with several seeds: its test macro-F1 and wall time.

The first seed runs with empty caches (a fresh DMHA_HOME: the Whisper parts joined, ASR of every
clip, features), the others with those caches warm, as a second `make demo` would. Each run is a
fresh `dmha demo --out DIR --set seed=K` process.

    python benchmarks/demo_seeds.py [--seeds 0,1,2] [--out benchmarks/results/demo]

Writes OUT/demo.json: per seed the test macro-F1 (64 clips of the two held-out synthetic speakers,
chance 0.25), the wall time and whether the caches were cold.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def dmha_command() -> list[str]:
    script = Path(sys.executable).parent / "dmha"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dmha.cli"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dmha-demo-") as tmp:
        env = {**os.environ, "DMHA_HOME": str(Path(tmp) / "home"), "HF_HUB_OFFLINE": "1"}
        for n, seed in enumerate(seeds):
            out = Path(tmp) / f"seed{seed}"
            start = time.perf_counter()
            done = subprocess.run(dmha_command() + ["demo", "--out", str(out), "--set", f"seed={seed}"], env=env,
                                  stdout=subprocess.DEVNULL)
            if done.returncode:
                raise SystemExit(f"demo_seeds: `dmha demo --set seed={seed}` failed with exit code {done.returncode}")
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            rows.append({"seed": seed, "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                         "wall_s": round(time.perf_counter() - start, 1), "cold_caches": n == 0})
            print(f"seed {seed}: test macro-F1 {metrics['macro_f1']:.4f}, {rows[-1]['wall_s']:.0f} s"
                  f"{' (cold caches)' if n == 0 else ''}", flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus", "runs": rows,
              "mean_macro_f1": float(np.mean([r["macro_f1"] for r in rows]))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'demo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
