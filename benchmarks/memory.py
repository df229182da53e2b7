"""Peak memory of `dmha predict` by input length, both attention variants, whole file and --segment.

    python benchmarks/memory.py [--ravdess ../shared/data/ravdess] [--minutes 0.1667,1,5,20]

Each figure is the peak resident set of one fresh `dmha predict` process (read with os.wait4, so
it is that process's own peak), on recordings of RAVDESS clips joined with pauses of 0.3-2 s,
predicted with `--no-asr` (the text branch sees an empty transcript: ASR's own memory is
faster-whisper's, in 30 s windows, and only slows the benchmark down). The heads are random-init
on the default encoders (Whisper base at true length, MiniLM): memory does not depend on the
weights. Prints a table and writes benchmarks/results/memory/memory.json. Run it alone.
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

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dmha.audio import SAMPLE_RATE, load_audio  # noqa: E402
from dmha.config import Config  # noqa: E402
from dmha.audio import WaveNorm  # noqa: E402
from dmha.modeldir import EncoderSpec, ModelBundle, build_model, head_dims, save_model_dir  # noqa: E402
from dmha.encoders.registry import speech_encoder, text_encoder  # noqa: E402

DEFAULT_RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
LABELS = ["angry", "happy", "neutral", "sad"]


def write_recording(path: Path, seconds: float, clips: list[np.ndarray], seed: int) -> None:
    """Clips and pauses until `seconds`, written block by block (one clip in memory at a time)."""
    rng = np.random.default_rng(seed)
    total, written = round(seconds * SAMPLE_RATE), 0
    with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as f:
        while written < total:
            pause = np.zeros(round(rng.uniform(0.3, 2.0) * SAMPLE_RATE), np.float32)
            block = np.concatenate([pause, clips[int(rng.integers(len(clips)))]])[: total - written]
            f.write(block)
            written += block.size


def model_dirs(root: Path) -> dict[str, Path]:
    """A random-init head per attention variant on the default encoders, saved as a model directory."""
    config = Config()
    speech, text = speech_encoder(config.encoders), text_encoder(config.encoders)
    specs = (EncoderSpec(speech.info.name, speech.info.identity, speech.info.num_layers, speech.info.dim),
             EncoderSpec(text.info.name, text.info.identity, text.info.num_layers, text.info.dim))
    out = {}
    for attention in ("standard", "subvector"):
        cfg = Config()
        cfg.model.attention = attention
        torch.manual_seed(0)
        out[attention] = root / f"model-{attention}"
        save_model_dir(out[attention], ModelBundle(build_model(cfg, head_dims(*specs, len(LABELS)), specs[0]).eval(), cfg, LABELS, *specs,
                                                   WaveNorm(per_utterance=True),
                                                   {"class_counts": {label: 1 for label in LABELS}}))
    return out


def measure(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `dmha` process, reaped here so the rusage is its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dmha.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"dmha {' '.join(argv)} failed (exit {proc.returncode}):\n{err.read()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--minutes", default="0.1667,1,5,20", help="input durations, minutes, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory" / "memory.json")
    args = parser.parse_args(argv)
    wavs = sorted(args.ravdess.rglob("*.flac")) + sorted(args.ravdess.rglob("*.wav"))
    if not wavs:
        raise SystemExit(f"{args.ravdess}: no RAVDESS audio files (see ../shared/data/ravdess/PROVENANCE.md)")
    rng = np.random.default_rng(0)
    clips = [load_audio(wavs[int(i)]) for i in rng.choice(len(wavs), size=min(48, len(wavs)), replace=False)]
    minutes = [float(m) for m in args.minutes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dirs = model_dirs(tmp)
        for m in minutes:
            audio = tmp / f"{m:g}min.wav"
            write_recording(audio, m * 60, clips, seed=round(m * 60))
            for attention, model_dir in dirs.items():
                for segment in (False, True):
                    argv = ["predict", str(model_dir), str(audio), "--no-asr", "--format", "jsonl", "--out",
                            str(tmp / "out.jsonl"), "--strict", "--max-duration-s", str(m * 60 + 1)]
                    if segment:
                        argv += ["--segment", "--timeline-dir", str(tmp / "timelines"), "--batch-size", "8"]
                    peak, wall = measure(argv)
                    rows.append({"minutes": m, "attention": attention, "segment": segment,
                                 "peak_rss_mb": round(peak), "wall_s": round(wall, 1)})
                    print(f"{m * 60:6.0f} s  {attention:9s}  {'--segment' if segment else 'whole    '}  "
                          f"peak RSS {peak:7.0f} MB  {wall:6.1f} s", flush=True)
            audio.unlink()
    whole = {(r["attention"], r["minutes"]): r["peak_rss_mb"] for r in rows if not r["segment"]}
    slopes = {}
    if len(minutes) > 1:
        lo, hi = min(minutes), max(minutes)
        slopes = {a: round((whole[(a, hi)] - whole[(a, lo)]) / (hi - lo), 1) for a in dirs}
        print(f"whole-file growth, MB per minute of audio: {slopes}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                                    "rows": rows, "whole_mb_per_minute": slopes}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
