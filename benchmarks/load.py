"""Load on `dmha serve`: N concurrent clients, with and without micro-batching, on loopback only.

    python benchmarks/load.py [--model tiny|embedded|DIR] [--clients 32] [--requests 4] [--max-seconds 120]

Starts `dmha serve` as a subprocess on a free 127.0.0.1 port once per setting (micro-batching at
the defaults, then `--batch-window-ms 0 --max-batch 1`), sends every client's requests one after
another (a closed loop: each client waits for its answer), and reports throughput, p50/p95
latency, errors and the mean batch size the server formed. Writes benchmarks/results/load/load.json.

Models: `tiny` (default) trains a 2-second model on the tests' tiny random-init encoders, so the
figures measure the service far more than the model; `embedded` saves an untrained head on the
default embedded encoders (Whisper base + MiniLM: the real inference cost, meaningless labels);
or a model directory. Clips: RAVDESS (../shared/data/ravdess) when present, else 3 s tones.
Transcripts are sent with each request unless --asr (then faster-whisper runs per request).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
SETTINGS = {"micro-batching": [], "no batching": ["--batch-window-ms", "0", "--max-batch", "1"]}
TRANSCRIPT = "kids are talking by the door"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_load(url: str, payloads: list[tuple[str, bytes]], clients: int, requests: int,
                   max_seconds: float, transcript: str | None = TRANSCRIPT) -> dict:
    """`clients` concurrent closed-loop clients, `requests` each, none started after `max_seconds`."""
    import httpx

    latencies, errors, statuses = [], [], {}
    stop_at = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=max_seconds + 60) as http:
        async def client(k: int) -> None:
            for r in range(requests):
                if time.monotonic() > stop_at:
                    return
                name, data = payloads[(k * requests + r) % len(payloads)]
                fields = {"transcript": transcript} if transcript else {}
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/predict", files={"file": (name, data)}, data=fields)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - start
        health = (await http.get("/healthz")).json()
    return {"clients": clients, "requests": len(latencies) + len(errors), "ok": len(latencies),
            "errors": len(errors), "error_samples": errors[:5], "statuses": statuses, "wall_s": wall,
            "throughput_rps": len(latencies) / wall, "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95), "latency_max_s": max(latencies, default=float("nan")),
            "server_batches": health["batches"], "server_items": health["items"],
            "mean_batch": health["items"] / max(health["batches"], 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, extra: list[str], queue_size: int) -> tuple[subprocess.Popen, str]:
    """`dmha serve` in a subprocess (its own interpreter: the clients never share its GIL)."""
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "dmha.cli", "serve", str(model), "--port", str(port),
                             "--queue-size", str(queue_size), *extra], env=env, stderr=subprocess.PIPE, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dmha serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("dmha serve did not start within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def tiny_model(root: Path) -> Path:
    """The tests' tiny random-init encoders and a tone model trained on them for one epoch."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_speech_encoder, build_tiny_text_encoder, write_tone_corpus
    from dmha.config import load
    from dmha.experiment import train

    speech, text = build_tiny_speech_encoder(root / "speech"), build_tiny_text_encoder(root / "text")
    manifest = write_tone_corpus(root / "corpus", n_per_class=4,
                                 labels=("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"))
    train(manifest, root / "run", load(None, [f"encoders.speech={speech}", f"encoders.text={text}",
                                              f"features.cache_dir={root / 'cache'}", "train.max_epochs=1",
                                              "model.hidden_layers=1", "train.crop_s=0"]), progress=False)
    return root / "run" / "model"


def embedded_model(root: Path) -> Path:
    """An untrained head on the default embedded encoders: the real cost of a prediction."""
    import torch

    from dmha.config import Config
    from dmha.audio import WaveNorm
    from dmha.modeldir import EncoderSpec, ModelBundle, build_model, head_dims, save_model_dir
    from dmha.encoders.registry import speech_encoder, text_encoder

    cfg, labels = Config(), ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    speech, text = speech_encoder(cfg.encoders, cfg.features.layers), text_encoder(cfg.encoders)
    specs = tuple(EncoderSpec(e.info.name, e.info.identity, e.info.num_layers, e.info.dim) for e in (speech, text))
    torch.manual_seed(0)
    save_model_dir(root / "model", ModelBundle(build_model(cfg, head_dims(*specs, len(labels)), specs[0]).eval(), cfg, labels, *specs,
                                               WaveNorm(), {"class_counts": {l: 1 for l in labels}}))
    return root / "model"


def clips(ravdess: Path, n: int) -> list[tuple[str, bytes]]:
    """n RAVDESS clips spread over actors (seeded), or 3 s tones when RAVDESS is absent."""
    files = sorted((ravdess / "audio").glob("Actor_*/*.flac")) if (ravdess / "audio").is_dir() else []
    if files:
        rng = np.random.default_rng(0)
        return [(f.name, f.read_bytes()) for f in (files[i] for i in rng.choice(len(files), n, replace=False))]
    import io

    import soundfile as sf

    out = []
    for k in range(n):
        t = np.arange(48000) / 16000
        buffer = io.BytesIO()
        sf.write(buffer, (0.3 * np.sin(2 * np.pi * (200 + 20 * k) * t)).astype(np.float32), 16000, format="WAV")
        out.append((f"tone_{k}.wav", buffer.getvalue()))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), embedded, or a model directory")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="no request starts after this, per setting")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--asr", action="store_true", help="send no transcript: ASR runs on every request")
    parser.add_argument("--server-args", default="", help="more `dmha serve` options for both settings, "
                        "e.g. '--timeout-s 120'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load" / "load.json")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.requests <= 100:
        parser.error("--clients must be 1-256 and --requests 1-100 (bounded load, loopback only)")
    return args


def measure(model: Path, payloads: list[tuple[str, bytes]], args: argparse.Namespace) -> dict:
    """Both settings, one fresh server each; the same clients, clips and transcripts."""
    transcript = None if args.asr else TRANSCRIPT
    settings = {}
    for name, extra in SETTINGS.items():
        proc, url = start_server(model, [*extra, *args.server_args.split()], queue_size=max(64, 2 * args.clients))
        try:
            asyncio.run(run_load(url, payloads[:4], 4, 1, 60, transcript))  # warm-up (ASR load, allocator)
            figures = asyncio.run(run_load(url, payloads, args.clients, args.requests, args.max_seconds, transcript))
        finally:
            stop_server(proc)
        figures["batching_args"] = " ".join(extra) or "(defaults: --batch-window-ms 20 --max-batch 8)"
        settings[name] = figures
        print(f"{name:15s} {figures['throughput_rps']:6.2f} req/s  p50 {figures['latency_p50_s']:.2f} s  "
              f"p95 {figures['latency_p95_s']:.2f} s  errors {figures['errors']}  "
              f"mean batch {figures['mean_batch']:.1f}  ({figures['ok']} ok in {figures['wall_s']:.1f} s)")
    return settings


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {"model": args.model, "asr": args.asr, "clients": args.clients, "requests_per_client": args.requests,
               "server_args": args.server_args, "load_average_before": os.getloadavg()[0],
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory() as tmp:
        builders = {"tiny": tiny_model, "embedded": embedded_model}
        model = builders[args.model](Path(tmp)) if args.model in builders else Path(args.model)
        payloads = clips(args.ravdess, args.clips)
        results["clips"] = [name for name, _ in payloads]
        results["settings"] = measure(model, payloads, args)
    on, off = results["settings"]["micro-batching"], results["settings"]["no batching"]
    results["batching_speedup"] = on["throughput_rps"] / off["throughput_rps"]
    results["load_average_after"] = os.getloadavg()[0]
    print(f"micro-batching throughput ÷ no batching: {results['batching_speedup']:.2f}×")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if on["errors"] == off["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
