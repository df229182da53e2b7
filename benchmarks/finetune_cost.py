#!/usr/bin/env python
"""What partial fine-tuning costs: one training epoch and peak memory for encoders.finetune_layers = N.

For each N, a fresh process prepares the manifest's training task exactly as `dmha train` does (the
feature store is reused: it reports how many features it computed, 0 once the store is warm), builds
the head with N live encoder layers and runs one epoch of forward, backward and AdamW steps over the
training loader (after two warm-up batches). It reports the epoch's wall time, its ratio to N = 0, the
process's peak resident memory and the number of trained parameters. One run, alone on the machine.

    python benchmarks/finetune_cost.py --manifest runs/ravdess.csv                 # N = 0, 1, 2, 3
    python benchmarks/finetune_cost.py --manifest runs/ravdess.csv --layers 0,2 --set train.batch_size=16
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(manifest: str, n: int, overrides: list[str]) -> dict:
    """One epoch with N live layers, in this process (so its peak memory is this N's)."""
    import torch

    from dmha.config import load
    from dmha.data.manifest import read_manifest
    from dmha.task import EmotionTask

    config = load(None, [*overrides, f"encoders.finetune_layers={n}"])
    items = read_manifest(manifest)
    labels = sorted({i.label for i in items})
    task = EmotionTask(config, labels, progress=False)
    prepared = task.prepare(items)
    module, train_loader, _ = task.build(prepared)
    optimizer = module.configure_optimizers()
    module.train()

    def step(batch) -> None:
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()

    module.log = lambda *a, **k: None  # no trainer: Lightning's logging is not what is timed
    warm = iter(train_loader)
    for _ in range(2):
        step(next(warm))
    start, batches = time.perf_counter(), 0
    for batch in train_loader:  # loading included: it is part of an epoch's cost
        step(batch)
        batches += 1
    epoch = time.perf_counter() - start
    trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    live = sum(p.numel() for p in module.model.top.parameters() if p.requires_grad) if module.model.top else 0
    return {"finetune_layers": n, "epoch_s": round(epoch, 2), "batches": batches,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "trained_params": trained, "live_encoder_params": live, "features_computed": prepared.features.speech_computed,
            "torch_threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="a manifest with train/dev splits (e.g. dmha prepare ravdess)")
    parser.add_argument("--layers", default="0,1,2,3", help="values of N to measure")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune_cost" / "finetune_cost.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one N here
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.manifest, args.one, args.set)))
        return 0
    rows = []
    for n in (int(x) for x in args.layers.split(",")):
        cmd = [sys.executable, __file__, "--manifest", args.manifest, "--one", str(n),
               *sum((["--set", s] for s in args.set), [])]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            print(f"N={n}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        base = rows[0]["epoch_s"] if rows[0]["finetune_layers"] == 0 else None
        row = rows[-1]
        row["epoch_ratio"] = round(row["epoch_s"] / base, 2) if base else None
        print(f"N={n}: epoch {row['epoch_s']:.1f} s ({row['batches']} batches)"
              + (f", {row['epoch_ratio']:.2f}x the frozen epoch" if base else "")
              + f", peak RSS {row['peak_rss_mb']} MB, {row['live_encoder_params']:,} live encoder parameters,"
              f" {row['features_computed']} features computed", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"manifest": args.manifest, "overrides": args.set, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
