"""Helpers several test modules share (tests never import from each other's modules)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from conftest import tone, write_tone_corpus
from dmha.audio import SAMPLE_RATE
from dmha.config import load
from dmha.data.demo_corpus import synthesize_demo_corpus
from dmha.experiment import train

# The DMHA head's inputs (test_model, test_recipe)

def head_inputs(b=3, layers=5, t1=(20, 13, 7), t2=(6, 4, 9), ds=24, dt=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    speech = torch.zeros(b, layers, max(t1), ds)
    text = torch.zeros(b, max(t2), dt)
    sm = torch.zeros(b, max(t1), dtype=torch.bool)
    tm = torch.zeros(b, max(t2), dtype=torch.bool)
    for i in range(b):
        speech[i, :, : t1[i]] = torch.randn(layers, t1[i], ds, generator=g)
        text[i, : t2[i]] = torch.randn(t2[i], dt, generator=g)
        sm[i, : t1[i]] = True
        tm[i, : t2[i]] = True
    return speech, sm, text, tm


# Audio files

def silent(path: Path, seconds: float = 0.01) -> Path:
    """A tiny silent audio file, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


# Long recordings (test_long, test_api)

def speech_clips(root: Path) -> list[np.ndarray]:
    """Twelve eSpeak NG utterances of 1.5-2.5 s (16 kHz float32): speech silero-vad recognises, offline."""
    manifest = synthesize_demo_corpus(root, seed=0, n_speakers=3, sentences_per_emotion=1, progress=False)
    clips = []
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            wave = sf.read(root / row["path"], dtype="float32")[0]
            voiced = np.flatnonzero(np.abs(wave) > 0.01)
            clips.append(wave[voiced[0]:voiced[-1] + 1])  # without the corpus's lead and trail pauses
    return clips


def write_long_recording(path: Path, seconds: float, clips, rate: int = SAMPLE_RATE, channels: int = 1,
                         seed: int = 0, monologue_s: float = 0.0) -> list[tuple[float, float]]:
    """Runs of utterances, pauses, noise bursts and tones over a faint noise floor, written block by block.

    The first `monologue_s` seconds are one unbroken run of speech. Returns the time spans (s) of
    the utterances. Only one block is ever in memory, so an hour costs no more than a minute to write.
    """
    rng = np.random.default_rng(seed)
    if rate != SAMPLE_RATE:
        clips = [soxr.resample(c, SAMPLE_RATE, rate) for c in clips]
    total, written, truth = int(seconds * rate), 0, []
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        while written < total:
            kind = "monologue" if written < monologue_s * rate else rng.choice(["speech"] * 3 + ["noise", "tone"])
            parts = [np.zeros(int(rng.uniform(0.3, 4.0) * rate), np.float32)]  # a pause first
            if kind in ("speech", "monologue"):  # 1-8 utterances with short pauses: 2 to about 25 s of speech
                cursor = written + parts[0].size
                for k in range(int(rng.integers(1, 9)) if kind == "speech" else int(monologue_s / 1.5) + 1):
                    clip = clips[int(rng.integers(len(clips)))]
                    truth.append((cursor / rate, (cursor + clip.size) / rate))
                    parts += [clip, np.zeros(int(rng.uniform(0.0, 0.3) * rate), np.float32)]
                    cursor += clip.size + parts[-1].size
            elif kind == "noise":
                parts.append(0.05 * rng.standard_normal(int(rng.uniform(0.2, 1.0) * rate)).astype(np.float32))
            else:
                t = np.arange(int(rng.uniform(0.5, 2.0) * rate)) / rate
                parts.append((0.2 * np.sin(2 * np.pi * rng.uniform(200, 1000) * t)).astype(np.float32))
            block = np.concatenate(parts)[: total - written]  # (n,)
            block = block + 0.002 * rng.standard_normal(block.size).astype(np.float32)
            f.write(np.repeat(block[:, None], channels, axis=1) * np.linspace(1, 0.6, channels))
            written += block.size
    return [(a, min(b, seconds)) for a, b in truth if a < seconds]


# Tiny trained models (test_api, test_long, test_export)

def train_tone_model(tiny_encoders, root: Path, *overrides: str) -> Path:
    """A model directory trained for one epoch on the tone corpus with the tiny encoders (seconds)."""
    manifest = write_tone_corpus(root / "corpus")
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                         "model.hidden_layers=1", *overrides])
    train(manifest, root / "run", config, progress=False)
    return root / "run" / "model"


def write_av(path: Path, container: str, codec: str, seconds: float = 1.5, freq: float = 440.0, rate: int = 48000,
             frame_size: int = 960) -> Path:
    """A stereo tone encoded with PyAV into `container` with `codec` (webm/libopus: Chromium's
    MediaRecorder; mp4/aac: phones and Safari), to exercise the PyAV path and the mixdown."""
    import fractions

    import av

    wave = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format=container) as media:
        stream = media.add_stream(codec, rate=rate, layout="stereo")
        size = stream.codec_context.frame_size or frame_size
        for i in range(0, wave.size, size):
            chunk = np.pad(wave[i:i + size], (0, max(0, i + size - wave.size)))
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                media.mux(packet)
        for packet in stream.encode(None):
            media.mux(packet)
    return path


def write_webm_opus(path: Path, seconds: float = 1.5, freq: float = 440.0, rate: int = 48000) -> Path:
    """What Chromium's MediaRecorder produces: Opus in WebM."""
    return write_av(path, "webm", "libopus", seconds, freq, rate)


# The web service (test_serve, test_serve_hardening)

TRANSCRIPT = "this is great today"


def wav_bytes(seconds: float = 1.0, freq: float = 300.0, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(freq, seconds, np.random.default_rng(0), rate), rate, format="WAV")
    return buffer.getvalue()


def post(client, data: bytes, name: str = "clip.wav", transcript: str | None = TRANSCRIPT, url="/v1/predict"):
    fields = {"transcript": transcript} if transcript is not None else {}
    return client.post(url, files={"file": (name, data, "application/octet-stream")}, data=fields)


def tmp_files(client) -> list[Path]:
    return sorted(client.app.state.service.tmp_dir.iterdir())


# The MSP-Podcast layout (test_msp_podcast, test_challenge_cli)

HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]


# (code, split, speaker): every code incl. X/O, the three challenge splits, one Test1 row.
ROWS = [
    ("A", "Train", "127"), ("H", "Train", "127"), ("S", "Train", "Unknown"), ("F", "Train", "3"),
    ("U", "Train", "3"), ("C", "Train", "9"), ("D", "Train", "9"), ("N", "Train", "9"),
    ("X", "Train", "9"), ("O", "Train", "3"),
    ("A", "Development", "44"), ("N", "Development", "44"), ("X", "Development", "45"),
    ("H", "Test1", "50"),
    ("", "Test3", "Unknown"), ("", "Test3", "Unknown"),
]


def name(i: int) -> str:
    return f"MSP-PODCAST_{i:04d}_0001.wav"


def make_tree(root: Path, rows=ROWS, *, audio: bool = True) -> Path:
    """Labels/labels_consensus.csv, Audios/ with tiny WAVs, Transcripts/ for two files."""
    (root / "Labels").mkdir(parents=True)
    (root / "Audios").mkdir()
    (root / "Transcripts").mkdir()
    with open(root / "Labels" / "labels_consensus.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i, (code, split, speaker) in enumerate(rows):
            writer.writerow([name(i), code, f"{i % 7 + 1}.0", "4.2", "3.8", speaker,
                             "Female" if i % 2 else "Male", split])
            if audio:
                wave = np.random.default_rng(i).standard_normal(1600 + 160 * i).astype(np.float32) * 0.01
                sf.write(root / "Audios" / name(i), wave, 16000)
    (root / "Transcripts" / "MSP-PODCAST_0000_0001.txt").write_text("  I am so\nangry today \n")
    (root / "Transcripts" / "MSP-PODCAST_0011_0001.txt").write_text("fine thanks")
    (root / "Transcripts" / "MSP-PODCAST_0001_0001.txt").write_text("   ")  # empty → ASR
    return root


# Prediction (test_pipeline, test_finetune)

def assert_batch_invariant(rec, items) -> None:
    """`predict` of the items one at a time and in batches of 4 gives the same labels and probabilities (1e-4)."""
    paths, texts = [i.path for i in items], [i.transcript for i in items]
    one = rec.predict(paths, transcripts=texts, batch_size=1)
    many = rec.predict(paths, transcripts=texts, batch_size=4)
    for a, b in zip(one, many):
        assert a.label == b.label and a.path == b.path
        assert max(abs(a.probs[k] - b.probs[k]) for k in a.probs) <= 1e-4


# A real browser (test_web_page, test_docs_site, test_serve_page): Playwright driving Debian's Chromium

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no internet: without these Chromium stalls on network and update services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip():
    """Playwright's sync_playwright and Debian chromium, or a skip (a failure when DMHA_REQUIRE_BROWSER=1)."""
    import pytest

    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem, sync_playwright = "the playwright package is not installed", None
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (apt-get install chromium)"
    if problem:
        if os.environ.get("DMHA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (DMHA_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(f"browser test skipped: {problem}")
    return sync_playwright
