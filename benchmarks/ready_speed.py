#!/usr/bin/env python
"""How fast the bundled models answer on this machine: the first result of `dmha predict CLIP` in a new
process (Python start, imports, loading the model and its encoders, one prediction), and the real-time
factor of predicting clips one at a time once loaded; beside it, what ASR would add (faster-whisper
tiny.en, what a multimodal model runs on a clip without a transcript).

    python benchmarks/ready_speed.py [--models NAME_OR_DIR ...] [--repeats 3]

Every figure is measured in this run on the shipped example clips; writes
benchmarks/results/ready_speed/speed.json. Run it alone: a second torch job on 2 cores slows both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "benchmarks" / "results" / "ready_speed" / "speed.json"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def first_result(model: str, clip: Path, repeats: int) -> list[float]:
    """Wall seconds of `dmha predict MODEL CLIP` in a new process, start to exit (the result printed)."""
    times = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dmha.cli", "predict", model, str(clip), "--format", "jsonl"],
                       check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return times


def real_time_factor(model: str, clips: list[Path], repeats: int) -> tuple[float, float]:
    """(compute seconds per audio second, audio seconds): each clip predicted alone, after one warm-up."""
    from dmha.audio import audio_duration
    from dmha.inference import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained(model)
    rec.predict(str(clips[0]))
    audio = repeats * sum(audio_duration(c) for c in clips)
    start = time.perf_counter()
    for _ in range(repeats):
        for clip in clips:
            rec.predict(str(clip))
    return (time.perf_counter() - start) / audio, audio


def asr_real_time_factor(clips: list[Path], repeats: int) -> float:
    """faster-whisper tiny.en on each clip (after one warm-up): what ASR adds per second of audio."""
    from dmha.audio import audio_duration, load_audio
    from dmha.encoders.registry import load_transcriber

    asr = load_transcriber("tiny.en")
    waves = [load_audio(c) for c in clips]
    asr.transcribe(waves[:1])
    start = time.perf_counter()
    for _ in range(repeats):
        for wave in waves:
            asr.transcribe([wave])
    return (time.perf_counter() - start) / (repeats * sum(audio_duration(c) for c in clips))


def main(argv=None) -> int:
    from dmha.examples import clips as example_clips
    from dmha.pretrained import bundled

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="bundled names or model directories "
                                                                   "(default: every bundled model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    models = args.models or list(bundled())
    if not models:
        parser.error("no bundled model in this installation and none named")
    clips = [c.path for c in example_clips()]
    result = {"machine": machine(), "clips": [c.name for c in clips], "repeats": args.repeats, "models": {}}
    for model in models:
        firsts = first_result(model, clips[0], args.repeats)
        rtf, audio = real_time_factor(model, clips, args.repeats)
        result["models"][Path(model).name if os.sep in model else model] = {
            "first_result_s": statistics.median(firsts), "first_result_runs_s": firsts,
            "rtf": rtf, "audio_s": audio}
        print(f"{model}: first result {statistics.median(firsts):.2f} s (median of {args.repeats}), RTF {rtf:.4f}")
    result["asr_tiny_en_rtf"] = asr_real_time_factor(clips, args.repeats)
    print(f"ASR (faster-whisper tiny.en) would add RTF {result['asr_tiny_en_rtf']:.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
