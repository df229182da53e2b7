"""Speed and size of dmha on RAVDESS clips, every figure a ratio or rate measured in this one run.

    python benchmarks/speed.py [--ravdess ../shared/data/ravdess] [--clips 96]

Prints a table and writes benchmarks/results/speed/speed.json. Runs on a temporary feature cache, so
nothing is reused from earlier runs (cold caches), and on the default embedded encoders
(Whisper base true length, MiniLM, faster-whisper tiny.en). Run it alone: on 2 cores a second
torch job slows both down many times.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dmha.audio import audio_duration, load_audio  # noqa: E402
from dmha.config import Config, EncodersConfig, TrainConfig  # noqa: E402
from dmha.data.ravdess import prepare_ravdess  # noqa: E402
from dmha.audio import WaveNorm  # noqa: E402
from dmha.batches import WaveDataset, collate_waves, feature_loader  # noqa: E402
from dmha.encoders.registry import speech_encoder, text_encoder  # noqa: E402
from dmha.extraction import extract_features  # noqa: E402
from dmha.layout import StoreRoot  # noqa: E402
from dmha.losses import TargetLoss, build_loss  # noqa: E402
from dmha.modeldir import EncoderSpec, ModelBundle, build_model, head_dims, save_model_dir  # noqa: E402
from dmha.training import DMHAModule  # noqa: E402

DEFAULT_RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def pick(items, n, seed=0):
    """n clips spread over speakers and emotions (seeded)."""
    rng = np.random.default_rng(seed)
    return [items[i] for i in sorted(rng.choice(len(items), size=min(n, len(items)), replace=False))]


def epoch_seconds(module: DMHAModule, loader) -> float:
    """One training epoch (forward, backward, AdamW step), without Lightning's bookkeeping."""
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=5e-4)
    module.train()
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        loss = module.batch_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def cache_vs_online(module, items, refs, targets, norm) -> tuple[float, float]:
    """Seconds of one epoch from the store and of one epoch with online extraction, same clips and head."""
    cached_loader = feature_loader(refs, targets, 32, shuffle=True)
    online_loader = torch.utils.data.DataLoader(WaveDataset(items, targets, refs, norm, 0, None),
                                                batch_size=32, shuffle=True, collate_fn=collate_waves)
    epoch_seconds(module(False), cached_loader)  # warm-up (page cache, allocator)
    return epoch_seconds(module(False), cached_loader), epoch_seconds(module(True), online_loader)


def paper_size_epochs(items, targets, labels, tmp) -> dict[str, float]:
    """The paper's setting: a 24-layer, 1024-wide WavLM-large-sized encoder (random weights: speed does
    not depend on their values) and the head at D=1024, standard and sub-vector first attention."""
    from transformers import WavLMConfig, WavLMModel, Wav2Vec2FeatureExtractor

    folder = Path(tmp) / "wavlm-large-random"
    torch.manual_seed(0)
    WavLMModel(WavLMConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    enc = EncodersConfig(speech=str(folder))
    speech, text = speech_encoder(enc), text_encoder(enc)
    cache = StoreRoot(Path(tmp) / "cache-paper")
    norm = WaveNorm()
    refs = extract_features(items, speech, text, cache, norm, 4, progress=False).refs
    specs = (EncoderSpec(speech.info.name, speech.info.identity, speech.info.num_layers, speech.info.dim),
             EncoderSpec(text.info.name, text.info.identity, text.info.num_layers, text.info.dim))
    counts = [max(targets.count(k), 1) for k in range(len(labels))]
    out = {}
    for attention in ("standard", "subvector"):
        cfg = Config()
        cfg.model.attention, cfg.model.dim = attention, 1024  # the paper's head width (the default is 128)

        def module(online: bool, cfg=cfg) -> DMHAModule:
            torch.manual_seed(0)
            return DMHAModule(build_model(cfg, head_dims(*specs, len(labels)), specs[0]), TargetLoss(build_loss("wce", counts)), len(labels),
                              TrainConfig(), speech if online else None)

        t_cached, t_online = cache_vs_online(module, items, refs, targets, norm)
        out[f"cache_epoch_speedup_wavlm_large_{attention}"] = t_online / t_cached
        out[f"epoch_s_cached_wavlm_large_{attention}"] = t_cached
        out[f"epoch_s_online_wavlm_large_{attention}"] = t_online  # one key per variant: neither overwrites the other
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", default=str(DEFAULT_RAVDESS), help="RAVDESS folder (../shared by default)")
    parser.add_argument("--clips", type=int, default=96, help="clips for extraction and the epoch figures")
    parser.add_argument("--predict-clips", type=int, default=24, help="clips for the predict figures")
    parser.add_argument("--padded-clips", type=int, default=16, help="clips for the padded-30 s Whisper figure")
    parser.add_argument("--paper-clips", type=int, default=32,
                        help="clips for the epoch figures with a WavLM-large-sized encoder (0 = skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed" / "speed.json"))
    args = parser.parse_args()
    if not Path(args.ravdess).is_dir():
        print(f"benchmarks/speed.py: {args.ravdess} not found (RAVDESS from ../shared)", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        items = pick(prepare_ravdess(Path(args.ravdess), Path(tmp) / "manifest.csv"), args.clips)
    labels = sorted({i.label for i in items})
    targets = [labels.index(i.label) for i in items]
    audio_s = sum(audio_duration(i.path) for i in items)
    cfg = Config()
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = StoreRoot(Path(tmp) / "cache")
        speech, text = speech_encoder(cfg.encoders), text_encoder(cfg.encoders)
        norm = WaveNorm()

        # 1. extraction throughput and cache size (true length, batch 8, cold cache)
        extracted, seconds = timed(lambda: extract_features(items, speech, text, cache, norm, 8, progress=False))
        results["extract_audio_s_per_s"] = audio_s / seconds
        speech_bytes = sum(p.stat().st_size for p in (cache.root / "speech").rglob("shards/*.safetensors"))
        results["cache_bytes_per_audio_hour"] = speech_bytes / (audio_s / 3600)
        refs = extracted.refs
        # Reading the store: one pass of the training loader (memory-mapped views + padding), no model.
        loader = feature_loader(refs, targets, 32, shuffle=True)
        _, t_read = timed(lambda: [None for _ in loader])
        results["store_read_ms_per_item"] = 1000 * t_read / len(refs)

        # 2. Whisper encoder on the true length vs padded to its 30 s window (same clips, batch 8)
        few = items[:args.padded_clips]
        waves = [load_audio(i.path) for i in few]
        padded = speech_encoder(EncodersConfig(speech_pad_to_s=30.0))
        for enc in (speech, padded):  # warm-up
            enc.encode(waves[:2])
        _, t_true = timed(lambda: [speech.encode(waves[k:k + 8]) for k in range(0, len(waves), 8)])
        _, t_pad = timed(lambda: [padded.encode(waves[k:k + 8]) for k in range(0, len(waves), 8)])
        results["whisper_true_length_speedup"] = t_pad / t_true
        del padded

        # 3. a training epoch from the cache vs with online extraction (the paper's way), same clips
        info = speech.info
        specs = (EncoderSpec(info.name, info.identity, info.num_layers, info.dim),
                 EncoderSpec(text.info.name, text.info.identity, text.info.num_layers, text.info.dim))
        counts = [targets.count(k) for k in range(len(labels))]

        def module(online: bool) -> DMHAModule:
            torch.manual_seed(0)
            model = build_model(cfg, head_dims(*specs, len(labels)), specs[0])
            return DMHAModule(model, TargetLoss(build_loss("wce", counts)), len(labels), TrainConfig(), speech if online else None)

        t_cached, t_online = cache_vs_online(module, items, refs, targets, norm)
        results["cache_epoch_speedup"] = t_online / t_cached
        results["epoch_s_cached"], results["epoch_s_online"] = t_cached, t_online
        results["store_read_share_of_cached_epoch"] = t_read / t_cached
        if args.paper_clips:
            results.update(paper_size_epochs(items[:args.paper_clips], targets[:args.paper_clips], labels, tmp))

        # 4. predict: batched vs batch 1 (ASR + encoders + head), real-time factors
        from dmha.inference import EmotionRecognizer

        torch.manual_seed(0)
        model_dir = Path(tmp) / "model"
        save_model_dir(model_dir, ModelBundle(build_model(cfg, head_dims(*specs, len(labels)), specs[0]).eval(), cfg, labels, *specs,
                                              norm, {"class_counts": dict(zip(labels, counts))}))
        rec = EmotionRecognizer.load(model_dir)
        sample = items[:args.predict_clips]
        paths = [i.path for i in sample]
        predict_audio_s = sum(audio_duration(p) for p in paths)
        rec.predict_files(paths[:2], batch_size=2)  # warm-up: loads the ASR model
        (one, _), t_one = timed(lambda: rec.predict_files(paths, batch_size=1))
        (many, _), t_many = timed(lambda: rec.predict_files(paths, batch_size=8))
        results["batched_inference_speedup"] = t_one / t_many
        results["batched_max_abs_diff"] = max(abs(a.probs[k] - b.probs[k]) for a, b in zip(one, many) for k in a.probs)
        results["batched_same_transcripts"] = float(all(a.transcript == b.transcript for a, b in zip(one, many)))
        results["predict_rtf_cpu"] = t_many / predict_audio_s
        texts = [i.transcript for i in sample]
        _, t_given = timed(lambda: rec.predict_files(paths, transcripts=texts, batch_size=8))
        results["predict_rtf_cpu_given_transcript"] = t_given / predict_audio_s
        # The same with a 10 s ASR window instead of Whisper's 30 s (encoders.asr_window_s=10)
        short_dir = Path(tmp) / "model-asr10"
        short_cfg = Config()
        short_cfg.encoders.asr_window_s = 10.0
        save_model_dir(short_dir, ModelBundle(rec.bundle.model, short_cfg, labels, *specs, norm,
                                              {"class_counts": dict(zip(labels, counts))}))
        short = EmotionRecognizer.load(short_dir)
        short.predict_files(paths[:2], batch_size=2)  # warm-up
        (short_preds, _), t_short = timed(lambda: short.predict_files(paths, batch_size=8))
        results["predict_rtf_cpu_asr_window_10s"] = t_short / predict_audio_s
        results["asr_window_10s_same_transcripts"] = float(
            np.mean([a.transcript == b.transcript for a, b in zip(many, short_preds)]))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["clips"], results["audio_s"], results["predict_audio_s"] = len(items), audio_s, predict_audio_s
    results["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"

    print(f"{'figure':38s} value")
    for key, value in results.items():
        print(f"{key:38s} {value:.4g}" if isinstance(value, float) else f"{key:38s} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
