#!/usr/bin/env python
"""The speech gate's evidence (issue 35, item 4): every clip of the shared corpora must be answered, every
non-speech signal refused.

Scores each clip of the shared corpora (RAVDESS, CREMA-D, EmoSpeech: all speech) and a seeded set of
non-speech signals (silence, dithered silence, DC, white/pink/brown noise at two levels, tones, a
buzz, mains hum, click trains, chirps, music-like chords and arpeggios) with the two detectors of
dmha.speech_gate: silero-vad's seconds of speech and voice score, and Whisper's no-speech probability
for every signal and for each clip silero finds too little speech in (their sum is the gate's evidence). The gate's thresholds are read off this table: the margin between
the most speech-like non-speech signal and the least speech-like speech clip. Every clip scaled to
−30 dB is scored beside it (the gate hears each input at a fixed peak, so it should change nothing).

    python benchmarks/no_speech.py [--shared ../shared] [--limit N]

Writes benchmarks/results/no_speech/no_speech.json (committed). No labels are read.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "no_speech" / "no_speech.json"
CORPORA = ("ravdess", "crema-d", "emospeech")
RATE = 16000


def _normalised(x: np.ndarray, peak: float) -> np.ndarray:
    top = np.abs(x).max()
    return (x * (peak / top) if top > 0 else x).astype(np.float32)


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def _note(freq: float, t: np.ndarray, harmonics: int = 6) -> np.ndarray:
    return sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))


def non_speech_signals(seconds: float = 3.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded non-speech test signals, 16 kHz mono float32, each `seconds` long: name → waveform."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    clicks10, clicks50 = np.zeros(n), np.zeros(n)
    clicks10[::RATE // 10], clicks50[::RATE // 50] = 1.0, 1.0
    chord = sum(_note(f, t) * (0.6 + 0.4 * np.sin(2 * np.pi * r * t)) for f, r in
                ((261.63, 2.0), (329.63, 3.0), (392.0, 1.5)))
    notes = (261.63, 293.66, 329.63, 392.0, 440.0, 392.0, 329.63, 293.66)
    step = RATE // 4  # a note every 250 ms, each with a plucked decay
    arpeggio = np.concatenate([_note(notes[k % len(notes)], t[:step]) * np.exp(-6 * t[:step])
                               for k in range(n // step + 1)])[:n]
    melody_bass = arpeggio + 0.5 * _note(130.81, t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    chirp = np.sin(2 * np.pi * (100 * t + (4000 - 100) / (2 * seconds) * t ** 2))
    return {
        "silence": np.zeros(n, np.float32),
        "dithered silence": _normalised(rng.standard_normal(n), 3e-5),
        "dc offset": np.full(n, 0.1, np.float32),
        "white noise": _normalised(rng.standard_normal(n), 0.5),
        "white noise, quiet": _normalised(rng.standard_normal(n), 0.01),
        "pink noise": _normalised(_coloured(rng, n, 1.0), 0.5),
        "pink noise, quiet": _normalised(_coloured(rng, n, 1.0), 0.01),
        "brown noise": _normalised(_coloured(rng, n, 2.0), 0.5),
        "tone 100 Hz": _normalised(np.sin(2 * np.pi * 100 * t), 0.5),
        "tone 440 Hz": _normalised(np.sin(2 * np.pi * 440 * t), 0.5),
        "tone 1 kHz": _normalised(np.sin(2 * np.pi * 1000 * t), 0.5),
        "tone 3 kHz": _normalised(np.sin(2 * np.pi * 3000 * t), 0.5),
        "buzz 220 Hz": _normalised(_note(220.0, t, 20), 0.5),
        "mains hum 50 Hz": _normalised(_note(50.0, t, 8), 0.5),
        "click train 10/s": _normalised(clicks10, 0.5),
        "click train 50/s": _normalised(clicks50, 0.5),
        "chirp 100-4000 Hz": _normalised(chirp, 0.5),
        "music-like chord": _normalised(chord, 0.5),
        "music-like arpeggio": _normalised(arpeggio, 0.5),
        "music-like melody and bass": _normalised(melody_bass, 0.5),
    }


def corpus_clips(shared: Path, corpus: str, limit: int | None) -> list[Path]:
    manifest = shared / "data" / corpus / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        paths = [shared / "data" / corpus / row["path"] for row in csv.DictReader(handle)]
    return paths[:limit] if limit else paths


def main(argv=None) -> int:
    from dmha.audio import load_audio
    from dmha.speech_gate import SpeechGate, evidence

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--limit", type=int, help="clips per corpus (a quick look; the committed run has none)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    gate = SpeechGate()
    start = time.time()
    signals = {}
    for name, wave in non_speech_signals().items():
        check, nsp = gate.check(wave), gate.no_speech_prob(wave)
        signals[name] = {"voice_prob": round(check.voice_prob, 3), "speech_s": round(check.speech_s, 3),
                         "no_speech_prob": round(nsp, 3), "evidence": round(evidence(check.voice_prob, nsp), 3),
                         "answered": check.has_speech}
    corpora, quiet = {}, {}
    for corpus in CORPORA:
        paths = corpus_clips(args.shared, corpus, args.limit)
        missed, answered, quiet_answered = [], 0, {"-30 dB": 0}
        for k, path in enumerate(paths, 1):
            wave = load_audio(path)
            check = gate.check(wave)
            answered += check.has_speech
            if check.no_speech_prob is not None:  # silero alone found too little speech
                missed.append({"clip": str(path.relative_to(args.shared)), "voice_prob": round(check.voice_prob, 3),
                               "speech_s": round(check.speech_s, 3),
                               "no_speech_prob": round(check.no_speech_prob, 3),
                               "evidence": round(evidence(check.voice_prob, check.no_speech_prob), 3),
                               "answered": check.has_speech})
            for level, gain in (("-30 dB", 10 ** (-30 / 20)),):
                quiet_answered[level] += gate.check(wave * np.float32(gain)).has_speech
            if k % 200 == 0 or k == len(paths):
                print(f"{corpus}: {k}/{len(paths)} clips, {len(missed)} needed Whisper, {k - answered} refused",
                      flush=True)
        corpora[corpus] = {"clips": len(paths), "answered": answered, "refused": len(paths) - answered,
                           "silero_too_little": len(missed),
                           "min_evidence": min((m["evidence"] for m in missed), default=None),
                           "answered_at": {lv: c for lv, c in quiet_answered.items()}, "needed_whisper": missed}
    speech_min = min((c["min_evidence"] for c in corpora.values() if c["min_evidence"] is not None), default=None)
    refused_signals = [s for s in signals.values() if not s["answered"]]
    result = {
        "gate": {"min_speech_s": gate.min_speech_s, "min_evidence": gate.min_evidence},
        "non_speech": signals,
        "non_speech_refused": f"{len(refused_signals)}/{len(signals)}",
        "corpora": corpora,
        "margin": {"non_speech_max_speech_s": max(s["speech_s"] for s in signals.values()),
                   "non_speech_max_evidence": max(s["evidence"] for s in signals.values()),
                   "speech_min_evidence": speech_min},
        "wall_s": round(time.time() - start, 1),
        "limit": args.limit,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("gate", "non_speech_refused", "margin", "wall_s")}, indent=2))
    for corpus, c in corpora.items():
        print(f"{corpus}: {c['answered']}/{c['clips']} answered ({c['silero_too_little']} needed Whisper); "
              f"scaled to -30 dB {c['answered_at']['-30 dB']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
