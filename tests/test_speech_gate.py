"""No speech, no emotion (issue 35, item 4): the speech gate refuses non-speech signals on every predict
path and still answers speech, quiet speech included. Runs the real detectors (silero-vad's ONNX model
and Whisper tiny.en, both packaged: no download)."""
import csv
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from dmha.audio import load_audio
from dmha.speech_gate import SpeechGate, evidence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import no_speech  # noqa: E402  (the seeded non-speech signals the benchmark scores)

pytestmark = pytest.mark.speech_gate
SIGNALS = no_speech.non_speech_signals(seconds=3.0, seed=0)
EXAMPLES = sorted(Path(str(resources.files("dmha.examples"))).glob("*.flac"))


@pytest.fixture(scope="module")
def gate() -> SpeechGate:
    return SpeechGate(enabled=True)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_non_speech_is_refused_with_a_reason(gate, name):
    check = gate.check(SIGNALS[name])
    assert not check.has_speech, f"{name}: answered ({check})"
    assert check.no_speech_prob is not None  # silero found too little, Whisper was asked
    assert check.reason.startswith("no speech found") and f"{check.no_speech_prob:.2f}" in check.reason


@pytest.mark.parametrize("level_db", [0, -30, -50])
def test_speech_is_answered_at_any_level(gate, level_db):
    assert EXAMPLES, "the packaged CREMA-D example clips are missing"
    for clip in EXAMPLES:
        check = gate.check(load_audio(clip) * np.float32(10 ** (level_db / 20)))
        assert check.has_speech and check.reason is None, f"{clip.name} at {level_db} dB: {check}"


def test_speech_beside_silence_and_noise_is_answered(gate):
    wave = load_audio(EXAMPLES[0])
    quiet = wave * np.float32(10 ** (-30 / 20))
    padded = np.concatenate([SIGNALS["silence"], quiet, SIGNALS["silence"]])
    noisy = quiet + SIGNALS["pink noise, quiet"][: quiet.size] * np.float32(0.1)
    for name, signal in (("padded", padded), ("noisy", noisy)):
        check = gate.check(signal)
        assert check.has_speech, f"{name}: {check}"


def test_evidence_decides_what_silero_alone_cannot(gate):
    """Below silero's seconds, the verdict is the summed evidence against the threshold (both ways)."""
    strict, lenient = SpeechGate(min_evidence=2.0), SpeechGate(min_evidence=0.0)
    tone = SIGNALS["tone 1 kHz"]
    check = gate.check(tone)
    assert evidence(check.voice_prob, check.no_speech_prob) < gate.min_evidence
    assert lenient.check(tone).has_speech and not strict.check(tone).has_speech


def test_off_answers_everything(monkeypatch):
    assert SpeechGate(enabled=False).check(SIGNALS["silence"]).has_speech
    monkeypatch.setenv("DMHA_SPEECH_CHECK", "0")
    assert not SpeechGate().enabled
    monkeypatch.setenv("DMHA_SPEECH_CHECK", "1")
    assert SpeechGate().enabled


def test_recognizer_gives_no_emotion_to_silence_and_keeps_order(serve_model_dir):
    from dmha.inference import EmotionRecognizer

    rec = EmotionRecognizer.load(serve_model_dir)
    speech = load_audio(EXAMPLES[0])
    preds = rec.predict([SIGNALS["silence"], speech, SIGNALS["white noise"]], sample_rate=16000, batch_size=3)
    assert [p.label is None for p in preds] == [True, False, True]
    assert preds[0].probs == {} and preds[0].reason.startswith("no speech found")
    assert preds[1].reason is None and abs(sum(preds[1].probs.values()) - 1) < 1e-5
    assert preds[1].probs == rec.predict(speech, sample_rate=16000).probs  # the gate changes no answer it gives
    assert "reason" in preds[2].to_dict() and "reason" not in preds[1].to_dict()
    off = EmotionRecognizer.load(serve_model_dir, speech_check=False).predict(SIGNALS["silence"], sample_rate=16000)
    assert off.label is not None and off.reason is None


def _write(path: Path, wave: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(path, wave, 16000)
    return path


def _cli(*args, env_off=False):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DMHA_SPEECH_CHECK"}
    if env_off:
        env["DMHA_SPEECH_CHECK"] = "0"
    return subprocess.run([sys.executable, "-m", "dmha.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_says_why_in_table_json_and_csv(serve_model_dir, tmp_path):
    silence = _write(tmp_path / "silence.wav", SIGNALS["silence"])
    tone = _write(tmp_path / "tone.wav", SIGNALS["tone 440 Hz"])
    speech = EXAMPLES[0]
    table = _cli("predict", serve_model_dir, silence, speech, "--no-asr")
    assert table.returncode == 0, table.stderr
    rows = {Path(line.split("\t")[0]).name: line.split("\t") for line in table.stdout.splitlines()}
    assert rows["silence.wav"][1] == "-" and rows["silence.wav"][2].startswith("no emotion: no speech found")
    assert rows[speech.name][1] != "-"
    jsonl = _cli("predict", serve_model_dir, tone, "--no-asr", "--format", "jsonl")
    (record,) = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert record["label"] is None and record["probs"] == {} and record["reason"].startswith("no speech found")
    out = tmp_path / "p.csv"
    assert _cli("predict", serve_model_dir, silence, speech, "--no-asr", "--format", "csv", "--out", out).returncode == 0
    with open(out, newline="") as handle:
        by_name = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert by_name["silence.wav"]["label"] == "" and by_name["silence.wav"]["reason"].startswith("no speech found")
    assert by_name[speech.name]["reason"] == "" and by_name[speech.name]["label"]
    for off in (_cli("predict", serve_model_dir, silence, "--no-asr", "--no-speech-check"),
                _cli("predict", serve_model_dir, silence, "--no-asr", env_off=True)):
        assert off.stdout.split("\t")[1] != "-", off.stdout


def test_service_says_why(serve_model_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dmha.inference import EmotionRecognizer
    from dmha.serve.app import create_app

    rec = EmotionRecognizer.load(serve_model_dir)
    with TestClient(create_app(rec)) as client:
        silence = _write(tmp_path / "silence.wav", SIGNALS["silence"])
        got = client.post("/v1/predict", files={"file": ("silence.wav", silence.read_bytes(), "audio/wav")}).json()
        # null fields are left out of the service's answers (response_model_exclude_none), label included
        assert "label" not in got and got["probs"] == {} and got["reason"].startswith("no speech found"), got
        speech = client.post("/v1/predict", files={"file": (EXAMPLES[0].name, EXAMPLES[0].read_bytes(),
                                                            "audio/flac")}).json()
        assert speech["label"] is not None and "reason" not in speech


def test_long_recordings_of_no_speech_have_no_segment_and_say_so(serve_model_dir, tmp_path):
    from dmha.inference import EmotionRecognizer

    rec = EmotionRecognizer.load(serve_model_dir)
    noise = np.concatenate([SIGNALS["music-like arpeggio"], SIGNALS["white noise"], SIGNALS["tone 440 Hz"]] * 2)
    timeline = rec.predict_long(noise, sample_rate=16000)
    assert timeline.segments == [] and timeline.to_dict()["reason"] == "no speech found"
    path = _write(tmp_path / "noise.wav", noise)
    done = _cli("predict", serve_model_dir, path, "--segment", "--no-asr", "--timeline-dir", tmp_path / "t")
    assert done.returncode == 0 and f"{path}: no speech found" in done.stderr, done.stderr


def test_the_committed_evidence_is_of_these_thresholds_and_meets_the_targets():
    """benchmarks/results/no_speech/no_speech.json was measured with the gate's current thresholds, on the
    benchmark's current signals: all refused, every clip of the three shared corpora answered."""
    from dmha.speech_gate import DEFAULT_MIN_EVIDENCE, DEFAULT_MIN_SPEECH_S

    result = json.loads((ROOT / "benchmarks" / "results" / "no_speech" / "no_speech.json").read_text())
    assert result["gate"] == {"min_speech_s": DEFAULT_MIN_SPEECH_S, "min_evidence": DEFAULT_MIN_EVIDENCE}
    assert result["limit"] is None and set(result["non_speech"]) == set(SIGNALS)
    assert not any(s["answered"] for s in result["non_speech"].values())
    assert max(s["evidence"] for s in result["non_speech"].values()) < DEFAULT_MIN_EVIDENCE
    assert set(result["corpora"]) == set(no_speech.CORPORA)
    for corpus in result["corpora"].values():
        assert corpus["answered"] == corpus["clips"] == corpus["answered_at"]["-30 dB"]
        assert all(m["evidence"] >= DEFAULT_MIN_EVIDENCE for m in corpus["needed_whisper"])
