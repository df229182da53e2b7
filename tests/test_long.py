"""Long recordings: streamed VAD segmentation, predict_long, `predict --segment`, and flat memory on an hour."""
import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from dmha.audio import SAMPLE_RATE, AudioError, load_audio
from dmha.cli import main
from dmha.inference import EmotionRecognizer
from dmha.segment import SegmentStream, stream_audio
from helpers import speech_clips, train_tone_model, write_long_recording



@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return speech_clips(tmp_path_factory.mktemp("espeak"))


@pytest.fixture(scope="module")
def model_dir(tiny_encoders, tmp_path_factory):
    return train_tone_model(tiny_encoders, tmp_path_factory.mktemp("long_model"))


@pytest.fixture(scope="module")
def rec(model_dir):
    return EmotionRecognizer.load(model_dir)


@pytest.fixture(scope="module")
def recording(clips, tmp_path_factory):
    """A 90 s, 44.1 kHz stereo recording (streamed resampling and mixdown) and its utterances' spans."""
    path = tmp_path_factory.mktemp("long") / "talk.flac"
    return path, write_long_recording(path, 90.0, clips, rate=44100, channels=2, seed=1)


def test_segments_cover_the_speech_within_bounds(recording):
    path, truth = recording
    stream = SegmentStream(stream_audio(path, block_s=1.5).blocks, min_s=2.0, max_s=8.0)
    segments = list(stream)
    assert stream.duration == pytest.approx(90.0, abs=0.01)
    whole = load_audio(path)
    for k, s in enumerate(segments):
        assert 2.0 - 1e-3 <= s.end - s.start <= 8.0 + 1e-3
        assert k == 0 or s.start >= segments[k - 1].end
        a = round(s.start * SAMPLE_RATE)
        assert s.wave.size == round(s.end * SAMPLE_RATE) - a
        assert np.abs(s.wave - whole[a:a + s.wave.size]).max() < 2e-3  # streamed vs whole-file resampling
    assert any(abs(a.end - b.start) < 1e-9 for a, b in zip(segments, segments[1:]))  # a long run was split
    for a, b in truth:  # the middle of every utterance is in a segment
        t = (a + b) / 2
        assert any(s.start <= t <= s.end for s in segments), (t, [(s.start, s.end) for s in segments])
    speech = sum(b - a for a, b in truth)
    covered = sum(s.end - s.start for s in segments)
    assert covered < speech + 2.0 * len(segments)  # pauses, tones and noise are mostly left out


def test_predict_long_is_the_same_for_file_array_tensor_and_batch_size(rec, recording):
    path, _ = recording
    by_file = rec.predict_long(path, transcribe=False, batch_size=8)
    wave, rate = sf.read(path, dtype="float32")  # (n, 2) at 44.1 kHz
    by_array = rec.predict_long(wave, sample_rate=rate, transcribe=False, batch_size=1)
    by_tensor = rec.predict_long(torch.from_numpy(wave.T.copy()), sample_rate=rate, transcribe=False)  # (2, n)
    assert by_file.path == str(path) and by_array.path == "<array>"
    assert len(by_file.segments) >= 5 and by_file.labels == rec.labels
    for other in (by_array, by_tensor):
        assert len(other.segments) == len(by_file.segments)
        for a, b in zip(by_file.segments, other.segments):
            assert abs(a.start - b.start) < 0.05 and abs(a.end - b.end) < 0.05
            assert max(abs(a.probs[k] - b.probs[k]) for k in a.probs) < 2e-3  # the resampling differs slightly
            assert a.transcript == ""


def test_each_segment_is_predicted_like_its_own_clip(rec, recording):
    path, _ = recording
    timeline = rec.predict_long(path, transcribe=False, max_s=6.0)
    whole = load_audio(path)
    for s in timeline.segments[:4]:
        clip = whole[round(s.start * SAMPLE_RATE):round(s.end * SAMPLE_RATE)]
        alone = rec.predict(clip, sample_rate=SAMPLE_RATE, transcript="")
        assert alone.label == s.label and max(abs(alone.probs[k] - s.probs[k]) for k in s.probs) < 2e-3
        assert s.end - s.start <= 6.0 + 1e-3


def test_predict_long_reports_progress_and_bad_input(rec, recording, tmp_path):
    path, _ = recording
    seen = []
    rec.predict_long(path, transcribe=False, progress=seen.append)
    assert sum(seen) == pytest.approx(90.0, abs=0.05) and len(seen) > 10
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav: cannot decode audio"):
        rec.predict_long(tmp_path / "bad.wav")
    with pytest.raises(ValueError, match="sample_rate is required"):
        rec.predict_long(np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="min_s <= max_s"):
        rec.predict_long(path, min_s=10, max_s=5)
    silent = rec.predict_long(np.zeros(5 * SAMPLE_RATE, np.float32), sample_rate=SAMPLE_RATE)
    assert silent.segments == [] and silent.duration == pytest.approx(5.0)


def test_cli_predict_segment_writes_timelines_and_jsonl(model_dir, recording, tmp_path, capsys):
    path, _ = recording
    (tmp_path / "bad.wav").write_text("not audio")
    out = tmp_path / "timelines"
    code = main(["predict", str(model_dir), str(path), str(tmp_path / "bad.wav"), "--segment", "--format", "jsonl",
                 "--no-asr", "--max-segment-s", "10", "--timeline-dir", str(out), "--batch-size", "4"])
    captured = capsys.readouterr()
    assert code == 3  # bad.wav skipped, the recording's timeline written
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records and all(list(r) == ["path", "start", "end", "label", "probs", "transcript"] for r in records)
    assert all(r["path"] == str(path) and r["end"] - r["start"] <= 10 + 1e-3 for r in records)
    assert sorted(p.name for p in out.iterdir()) == ["talk.csv", "talk.json", "talk.png"]
    saved = json.loads((out / "talk.json").read_text())
    assert saved["duration"] == pytest.approx(90.0, abs=0.01) and len(saved["segments"]) == len(records)
    with open(out / "talk.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(records)
    assert "skipped 1 bad file" in captured.err and "bad.wav" in captured.err


def test_cli_segment_rejects_per_file_options_and_bad_bounds(model_dir, recording, capsys):
    path, _ = recording
    code = main(["predict", str(model_dir), str(path), "--segment", "--transcript", "hello"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--transcript" in err
    code = main(["predict", str(model_dir), str(path), "--segment", "--min-segment-s", "9", "--max-segment-s", "3"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--min-segment-s/--max-segment-s" in err


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from dmha.cli import main

    started = time.perf_counter()
    code = main(sys.argv[1:])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "peak_mb": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started,
                      "cpu_s": usage.ru_utime + usage.ru_stime}))
""")


@pytest.mark.slow
def test_memory_stays_flat_on_an_hour(model_dir, clips, tmp_path):
    """Peak RSS of `dmha predict --segment` on 60 vs 5 minutes of audio, each in a fresh process.

    Both recordings open with two minutes of unbroken speech, so both meet the largest batch
    (8 segments of max_s) early: what differs is only the length.
    """
    script = tmp_path / "measure.py"
    script.write_text(_MEMORY_SCRIPT)
    results = {}
    for minutes in (5, 60):
        path = tmp_path / f"{minutes}min.wav"
        write_long_recording(path, minutes * 60.0, clips, seed=minutes, monologue_s=130.0)
        argv = ["predict", str(model_dir), str(path), "--segment", "--no-asr", "--batch-size", "8", "--format",
                "jsonl", "--out", str(tmp_path / f"{minutes}.jsonl"), "--timeline-dir", str(tmp_path / "t")]
        run = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        results[minutes] = json.loads(run.stdout.strip().splitlines()[-1])
        results[minutes]["segments"] = len((tmp_path / f"{minutes}.jsonl").read_text().splitlines())
        path.unlink()
    print(f"predict --segment, peak memory and time: {results}")
    timeline = json.loads((tmp_path / "t" / "60min.json").read_text())
    assert timeline["duration"] == pytest.approx(3600.0, abs=0.1) and results[60]["segments"] > 300
    assert timeline["segments"][-1]["end"] > 3500
    assert results[60]["peak_mb"] - results[5]["peak_mb"] < 150


_LIMITED_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    limit = int(sys.argv[1]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # an allocation past it is a MemoryError, not a kill
    from dmha.cli import main
    code = main(sys.argv[2:])
    print(json.dumps({"code": code, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def test_whole_recording_predict_fits_a_memory_limit(model_dir, tmp_path):
    """Five minutes predicted whole, under an address-space limit: the standard head's T×T weights
    (4 heads × 15,000² frames ≈ 3.6 GB each) would not fit, so materialising them fails this test."""
    path = tmp_path / "five_minutes.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(300 * SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE)
    script = tmp_path / "limited.py"
    script.write_text(_LIMITED_SCRIPT)
    out = tmp_path / "out.jsonl"
    run = subprocess.run([sys.executable, str(script), "6144", "predict", str(model_dir), str(path), "--no-asr",
                          "--format", "jsonl", "--out", str(out), "--strict"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (pred,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert pred["path"] == str(path) and sum(pred["probs"].values()) == pytest.approx(1, abs=1e-4)


def test_inputs_over_the_duration_limit_point_to_segment(model_dir, tmp_path, capsys):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(2 * SAMPLE_RATE, dtype=np.float32) + 0.01, SAMPLE_RATE)
    assert main(["predict", str(model_dir), str(path), "--no-asr", "--max-duration-s", "1.5"]) == 3  # skipped
    err = capsys.readouterr().err
    assert f"{path}: lasts 2 s, over the 2 s limit" in err and "--segment" in err
    rec = EmotionRecognizer.load(model_dir, max_duration_s=1.5)
    for item in (path, np.zeros(2 * SAMPLE_RATE, dtype=np.float32)):
        with pytest.raises(AudioError, match="use --segment"):
            rec.predict(item, sample_rate=SAMPLE_RATE, transcript="")
    assert main(["predict", str(model_dir), str(path), "--max-duration-s", "0"]) == 1


def test_attention_weights_are_refused_past_their_bound(monkeypatch):
    from dmha import model as model_module
    from dmha.config import ModelConfig

    monkeypatch.setattr(model_module, "MAX_ATTENTION_POSITIONS", 30)
    head = model_module.DMHA(model_module.HeadDims(3, 8, 8, 2), ModelConfig(heads=2)).eval()
    speech, text = torch.randn(1, 3, 40, 8), torch.randn(1, 2, 8)
    masks = torch.ones(1, 40, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        assert head(speech, masks[0], text, masks[1]).logits.shape == (1, 2)  # the prediction is fine
        with pytest.raises(model_module.AttentionTooLong, match="42 positions .* up to 30 positions"):
            head(speech, masks[0], text, masks[1], return_attention=True)


def test_long_files_go_in_small_batches_with_the_same_results(rec, tmp_path, monkeypatch):
    """predict --batch-size keeps each batch within MAX_BATCH_SECONDS of padded audio: two 3 s files
    do not pad two 1 s files to 3 s when the budget is 6 s, and the results equal batch size 1."""
    from dmha import recordings

    rng = np.random.default_rng(1)
    paths = []
    for k, seconds in enumerate((3, 1, 3, 1)):
        paths.append(tmp_path / f"f{k}.wav")
        sf.write(paths[-1], (0.1 * rng.standard_normal(seconds * SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE)
    alone, _ = rec.predict_files(paths, [""] * 4, batch_size=1)
    monkeypatch.setattr(recordings, "MAX_BATCH_SECONDS", 6.0)
    sizes = []
    predict_waves = rec.predict_waves
    monkeypatch.setattr(rec, "predict_waves", lambda waves, *a, **k: sizes.append([len(w) for w in waves])
                        or predict_waves(waves, *a, **k))
    batched, errors = rec.predict_files(paths, [""] * 4, batch_size=4)
    assert not errors and sizes == [[SAMPLE_RATE] * 2, [3 * SAMPLE_RATE] * 2]
    for a, b in zip(alone, batched):
        assert a.label == b.label and all(abs(a.probs[k] - b.probs[k]) < 1e-4 for k in a.probs)


def test_decoding_audio_does_not_load_torch():
    """`predict --segment` moves large allocations off the heap before torch loads (its hour-long
    memory bound depends on it), so the modules it imports first must not import torch."""
    code = "import sys, dmha.audio, dmha.segment, dmha.cli; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr[-1000:]
