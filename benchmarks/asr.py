"""Word accuracy and speed of the packaged ASR models on RAVDESS, by ASR encoder window.

    python benchmarks/asr.py [--ravdess ../shared/data/ravdess] [--clips 96] [--batch-size 8]

For faster-whisper tiny.en and base (both embedded, int8 on CPU, greedy at temperature 0) and
`encoders.asr_window_s` 30 (Whisper's own window, the default), 10, and 1 (which pads each batch
only to its longest clip: "true length"), on seeded random RAVDESS clips:

- word accuracy: 1 - word error rate against the clip's sentence (lower case, punctuation dropped);
- agreement: word accuracy of the transcript against the same model's 30 s-window transcript;
- real-time factor: transcription wall time / audio time (batches of `--batch-size`, after a warm-up);
- speedup: the 30 s window's time / this window's time.

Prints a table and writes benchmarks/results/asr/asr.json. Run it alone.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dmha.audio import SAMPLE_RATE, load_audio  # noqa: E402
from dmha.encoders.registry import load_transcriber  # noqa: E402

DEFAULT_RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
MODELS = ("tiny.en", "base")
WINDOWS = (30.0, 10.0, 1.0)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_accuracy(refs: list[str], hyps: list[str]) -> float:
    """1 - WER pooled over all clips (errors / reference words)."""
    ref_words = [words(r) for r in refs]
    errors = sum(word_errors(r, words(h)) for r, h in zip(ref_words, hyps))
    return 1.0 - errors / max(sum(len(r) for r in ref_words), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "asr" / "asr.json")
    args = parser.parse_args(argv)
    manifest = args.ravdess / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: not found (see ../shared/data/ravdess/PROVENANCE.md)")
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    picked = [rows[int(i)] for i in rng.choice(len(rows), size=min(args.clips, len(rows)), replace=False)]
    waves = [load_audio(args.ravdess / r["path"]) for r in picked]
    refs = [r["transcript"] for r in picked]
    audio_s = sum(w.size for w in waves) / SAMPLE_RATE
    print(f"{len(waves)} RAVDESS clips, {audio_s:.0f} s of audio", flush=True)
    results = []
    for name in MODELS:
        reference, t30 = None, None
        for window in WINDOWS:
            asr = load_transcriber(name, device="cpu", **({"window_s": window} if window != 30 else {}))
            asr.transcribe(waves[:2])  # warm-up
            started = time.perf_counter()
            hyps = [t for k in range(0, len(waves), args.batch_size) for t in asr.transcribe(waves[k:k + args.batch_size])]
            seconds = time.perf_counter() - started
            reference = hyps if reference is None else reference  # WINDOWS starts with 30 s
            t30 = seconds if t30 is None else t30
            row = {"asr": name, "window_s": window, "word_accuracy": round(word_accuracy(refs, hyps), 3),
                   "agreement_with_30s": round(word_accuracy(reference, hyps), 3), "rtf": round(seconds / audio_s, 4),
                   "seconds": round(seconds, 1)}
            row["speedup_vs_30s"] = round(t30 / seconds, 2)
            results.append(row)
            print(f"{name:8s} window {window:4g} s  word accuracy {row['word_accuracy']:.3f}  agreement "
                  f"{row['agreement_with_30s']:.3f}  RTF {row['rtf']:.3f}  speedup {row['speedup_vs_30s']:.2f}×",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "clips": len(waves),
                                    "audio_s": round(audio_s, 1), "rows": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
