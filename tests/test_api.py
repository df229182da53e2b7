"""The public Python API: `from dmha import EmotionRecognizer`, every input form, and the documented example."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import train_tone_model
import dmha
from dmha.audio import AudioError
from dmha.cli import main
from dmha.data.manifest import read_manifest
from dmha.ensemble import make_ensemble

PYTHON_API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "deploy" / "python-api.md"



@pytest.fixture(scope="module")
def setup(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    model_dir = train_tone_model(tiny_encoders, root)
    items = read_manifest(root / "corpus" / "manifest.csv")[:4]
    return model_dir, [str(i.path) for i in items], [i.transcript for i in items]


@pytest.fixture(scope="module")
def rec(setup):
    return dmha.EmotionRecognizer.load(setup[0], device="cpu")


def _same(a, b, tol=1e-4):
    assert a.label == b.label and max(abs(a.probs[k] - b.probs[k]) for k in a.probs) <= tol


def test_import_dmha_is_lazy_and_lists_the_api():
    code = "import sys, dmha; print('torch' in sys.modules, sorted(set(dir(dmha)) & {'EmotionRecognizer', 'Timeline'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ['EmotionRecognizer', 'Timeline']"
    from dmha import EmotionRecognizer, Prediction, Segment, Timeline  # noqa: F401

    assert dmha.EmotionRecognizer.__module__ == "dmha.inference" and dmha.Timeline.__module__ == "dmha.timeline"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dmha.Nope


def test_predict_a_path(rec, setup):
    _, paths, texts = setup
    pred = rec.predict(paths[0], transcript=texts[0])
    assert isinstance(pred, dmha.Prediction) and pred.path == paths[0] and pred.transcript == texts[0]
    assert pred.label in rec.labels and set(pred.probs) == set(rec.labels)
    assert sum(pred.probs.values()) == pytest.approx(1.0, abs=1e-5) and pred.attention is None
    assert rec.predict(Path(paths[0]), transcript=texts[0]).to_dict() == pred.to_dict()


def test_predict_a_list_of_paths_in_batches_keeps_the_order(rec, setup):
    _, paths, texts = setup
    batched = rec.predict(paths, transcripts=texts, batch_size=3)
    assert [p.path for p in batched] == paths
    for path, text, pred in zip(paths, texts, batched):
        _same(pred, rec.predict(path, transcript=text))


def test_every_waveform_form_gives_the_file_result(rec, setup):
    _, paths, texts = setup
    ref = rec.predict(paths[0], transcript=texts[0])
    wave, rate = sf.read(paths[0], dtype="float32")  # (n,) at 16 kHz
    stereo = np.stack([wave, wave], axis=1)  # (n, 2)
    int16 = np.round(wave * 32767).astype(np.int16)
    forms = {"1-D": wave, "(n, ch)": stereo, "(ch, n)": stereo.T.copy(), "tensor": torch.from_numpy(wave),
             "tensor (ch, n)": torch.from_numpy(stereo.T.copy()), "float64": wave.astype(np.float64),
             "bf16 tensor": torch.from_numpy(wave).to(torch.bfloat16)}
    for name, form in forms.items():
        pred = rec.predict(form, sample_rate=rate, transcript=texts[0])
        assert pred.path is None, name
        _same(pred, ref, tol=1e-4 if "bf16" not in name else 2e-2)
    _same(rec.predict(int16, sample_rate=rate, transcript=texts[0]), ref, tol=1e-3)
    wave_8k = sf.read(paths[0], dtype="float32")[0][::2]  # any rate is resampled to 16 kHz
    assert rec.predict(wave_8k, sample_rate=8000, transcript=texts[0]).label in rec.labels


def test_a_list_of_arrays_and_a_mixed_list(rec, setup):
    _, paths, texts = setup
    waves = [sf.read(p, dtype="float32")[0] for p in paths]
    preds = rec.predict(waves, sample_rate=16000, transcripts=texts, batch_size=2)
    mixed = rec.predict([paths[0], waves[1]], sample_rate=16000, transcripts=texts[:2])
    assert [p.path for p in mixed] == [paths[0], None]
    for pred, path, text in zip(preds, paths, texts):
        _same(pred, rec.predict(path, transcript=text))
    _same(mixed[1], preds[1])


def test_attention_weights_on_request(rec, setup):
    _, paths, texts = setup
    pred = rec.predict(paths[0], transcript=texts[0], return_attention=True)
    first, pooling = pred.attention["first"], pred.attention["pooling"]
    t = first.shape[-1]  # speech frames + text tokens
    assert first.shape == (4, t, t) and pooling.shape == (t,) and 0 < int(pred.attention["speech_frames"]) < t
    assert np.allclose(first.sum(-1), 1, atol=1e-4) and pooling.sum() == pytest.approx(1, abs=1e-4)
    for item in rec.predict(paths[:2], transcripts=texts[:2], return_attention=True, batch_size=2):
        assert item.attention["first"].ndim == 3


def test_bad_inputs_are_one_line_errors(rec, setup, tmp_path):
    _, paths, texts = setup
    wave = sf.read(paths[0], dtype="float32")[0]
    with pytest.raises(ValueError, match="sample_rate is required"):
        rec.predict(wave, transcript="x")
    with pytest.raises(ValueError, match="got 1 transcripts for 2 inputs"):
        rec.predict(paths[:2], transcripts=["x"])
    with pytest.raises(ValueError, match="transcript is for a single input"):
        rec.predict(paths[:2], transcript="x")
    with pytest.raises(AudioError, match=r"<array>: expected shape \(n,\) or \(n, channels\)"):
        rec.predict(np.zeros((2, 3, 16000), np.float32), sample_rate=16000, transcript="x")
    with pytest.raises(AudioError, match=r"<array 1>: contains NaN/Inf"):
        rec.predict([wave, np.full(16000, np.nan, np.float32)], sample_rate=16000, transcripts=["x", "y"])
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav: cannot decode audio") as err:
        rec.predict([paths[0], str(tmp_path / "bad.wav")], transcripts=["x", "y"])
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="input 1: expected a path, numpy array or torch tensor, got int"):
        rec.predict([wave, 3], sample_rate=16000, transcripts=["x", "y"])


def test_an_ensemble_directory_predicts_with_votes(tiny_encoders, setup, tmp_path):
    model_dir, paths, texts = setup
    other = train_tone_model(tiny_encoders, tmp_path / "sub", "model.attention=subvector", "seed=1")
    make_ensemble([model_dir, other], tmp_path / "ens")
    ens = dmha.EmotionRecognizer.load(tmp_path / "ens")
    pred = ens.predict(paths[0], transcript=texts[0])
    assert len(pred.votes) == 2 and set(pred.votes.values()) <= set(ens.labels)
    assert pred.to_dict()["votes"] == pred.votes


def test_cli_predict_without_asr(setup, capsys):
    model_dir, paths, _ = setup
    assert main(["predict", str(model_dir), *paths[:2], "--no-asr", "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == paths[:2] and all(r["transcript"] == "" for r in records)


def _page_block(heading: str) -> str:
    """The first Python block under `heading` of the Python API page (a `## ` inside a block is a comment)."""
    text = PYTHON_API_PAGE.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_page_example_runs(setup, tmp_path):
    """The Python API page's example, run as written, in a folder with the files it names."""
    from helpers import speech_clips, write_long_recording

    model_dir, paths, _ = setup
    shutil.copytree(model_dir, tmp_path / "demo_out" / "model")
    shutil.copy(paths[0], tmp_path / "clip.wav")
    wave, rate = sf.read(paths[1])
    sf.write(tmp_path / "other.flac", wave, rate)
    write_long_recording(tmp_path / "meeting.wav", 20.0, speech_clips(tmp_path / "espeak"))
    (tmp_path / "example.py").write_text(_page_block("## Everything `predict` does"))
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "['high', 'low']" and len(lines) >= 5
    for name in ("meeting.csv", "meeting.json", "meeting.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_recognizer_answers_like_an_audio_classification_pipeline(rec, setup):
    """`rec(input)` gives transformers' audio-classification shape: [{"label", "score"}], most probable
    first, `top_k` of them; a list of inputs gives one such list each."""
    _, paths, texts = setup
    ranked = rec(paths[0], transcript=texts[0])
    pred = rec.predict(paths[0], transcript=texts[0])
    assert [r["label"] for r in ranked] == sorted(pred.probs, key=lambda k: -pred.probs[k])
    assert ranked[0] == {"label": max(pred.probs, key=pred.probs.get), "score": max(pred.probs.values())}
    assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:]))
    assert rec(paths[0], transcript=texts[0], top_k=1) == ranked[:1]
    many = rec(paths[:2], transcripts=texts[:2], top_k=2)
    assert len(many) == 2 and all(len(r) == 2 for r in many) and many[0] == ranked[:2]
    wave, rate = sf.read(paths[1], dtype="float32")
    assert rec(wave, sample_rate=rate, transcript=texts[1], top_k=2) == many[1]


def test_the_recognizer_moves_like_a_torch_module(setup):
    model_dir, paths, texts = setup
    rec = dmha.EmotionRecognizer.load(model_dir)
    before = rec.predict(paths[0], transcript=texts[0])
    assert rec.to("cpu") is rec and rec.device == "cpu"
    assert all(p.device.type == "cpu" for m in rec.members for p in m.bundle.model.parameters())
    _same(rec.predict(paths[0], transcript=texts[0]), before, tol=1e-6)
    if torch.cuda.is_available():  # a GPU machine: the heads and the encoders go there, the answer stays
        _same(rec.to("cuda").predict(paths[0], transcript=texts[0]), before)


def test_compressed_recordings_decode_in_the_api_and_the_cli(rec, setup, tmp_path, capsys):
    """webm/opus (Chromium), mp4 and m4a with AAC (phones, Safari): decoded with PyAV wherever audio is
    read, as the service does, with the same one-line errors."""
    from dmha.audio import audio_duration, load_audio
    from helpers import write_av

    files = [write_av(tmp_path / "rec.webm", "webm", "libopus"), write_av(tmp_path / "phone.m4a", "mp4", "aac"),
             write_av(tmp_path / "clip.mp4", "mp4", "aac", seconds=2.0)]
    for path, seconds in zip(files, (1.5, 1.5, 2.0)):
        assert audio_duration(path) == pytest.approx(seconds, abs=0.05)
        assert load_audio(path).size == pytest.approx(seconds * 16000, rel=0.03)
    preds = rec.predict(files, transcripts=["x"] * 3)
    assert [p.path for p in preds] == [str(f) for f in files] and all(p.label in rec.labels for p in preds)
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(files[1].read_bytes()[:200])  # the ftyp box, then nothing
    with pytest.raises(AudioError, match=r"broken\.m4a: cannot decode audio"):
        load_audio(broken)
    out = tmp_path / "p.csv"
    assert main(["predict", str(setup[0]), *map(str, files), str(broken), "--no-asr", "--format", "csv",
                 "--out", str(out)]) == 3  # the broken one skipped, the three others written
    assert len(out.read_text().splitlines()) == 1 + 3
    err = capsys.readouterr().err
    assert f"{broken}: cannot decode audio" in err
