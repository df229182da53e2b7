"""dmha serve: endpoints, limits, temp-file hygiene and micro-batching, on a tiny trained model."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import TRANSCRIPT, post, tmp_files, wav_bytes, write_webm_opus
from conftest import require_ravdess, tone, train_tiny_model
from dmha.inference import EmotionRecognizer

fastapi = pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from dmha.serve import app as app_module  # noqa: E402
from dmha.serve.app import create_app  # noqa: E402
from dmha.serve.batcher import MicroBatcher, QueueFull  # noqa: E402
from dmha.serve.decode import decode_upload  # noqa: E402
from dmha.serve.settings import ServeSettings  # noqa: E402
from dmha.serve.uploads import safe_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(serve_model_dir) -> Path:
    return serve_model_dir


@pytest.fixture(scope="module")
def rec(model_dir) -> EmotionRecognizer:
    return EmotionRecognizer.load(model_dir)


@pytest.fixture(scope="module")
def clips(model_dir) -> list[Path]:
    return sorted((model_dir.parent.parent / "corpus").glob("*.wav"))



def assert_same(got: dict, want, tol: float = 1e-6) -> None:
    assert got["label"] == want.label and got["transcript"] == want.transcript
    assert set(got["probs"]) == set(want.probs)
    assert max(abs(got["probs"][k] - want.probs[k]) for k in want.probs) <= tol



# --- endpoints -------------------------------------------------------------------------------

def test_predict_equals_recognizer_on_the_same_file(rec, clips):
    with TestClient(create_app(rec)) as client:
        for clip in clips[:3]:
            response = post(client, clip.read_bytes(), name=clip.name)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["path"] == clip.name and "votes" not in body
            assert_same(body, rec.predict(clip, transcript=TRANSCRIPT))
        assert tmp_files(client) == []


def test_predict_without_transcript_uses_asr(rec, clips):
    with TestClient(create_app(rec)) as client:
        response = post(client, clips[0].read_bytes(), name=clips[0].name, transcript=None)
        assert response.status_code == 200, response.text
        assert_same(response.json(), rec.predict(clips[0]))
        blank = post(client, clips[0].read_bytes(), name=clips[0].name, transcript="   ")
        assert blank.json()["transcript"] == response.json()["transcript"]


def test_healthz_model_info_docs_and_page(rec, model_dir):
    with TestClient(create_app(rec, ServeSettings(max_duration_s=42))) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        info = client.get("/v1/model").json()
        config = json.loads((model_dir / "config.json").read_text())["config"]
        assert info["labels"] == rec.labels and info["ensemble"] is False and info["thresholds"] is None
        local = {k: config["encoders"][k] for k in ("speech", "speech", "text")}  # the tiny encoders' directories
        assert info["encoders"]["speech"] == f"local:{Path(local['speech']).name}"
        assert info["encoders"]["asr"] == config["encoders"]["asr"]  # a registry name stays as it is
        identity = info["members"][0]["identities"]["speech"]
        assert identity.startswith(f"hf:local:{Path(local['speech']).name}@") and "|" in identity
        assert not any(str(Path(p).parent) in json.dumps(info) for p in local.values())  # no path of this machine
        assert [m["name"] for m in info["members"]] == ["run"]
        assert info["members"][0]["temperature"] == rec.members[0].bundle.model.temperature  # calibration.json
        assert info["card"] is None  # the tone model has no MODEL_CARD.md (a bundled model's is served here)
        assert info["limits"]["max_duration_s"] == 42 and "tmp_dir" not in info["limits"]
        spec = client.get("/openapi.json").json()
        assert {"/v1/predict", "/v1/predict-long", "/healthz", "/v1/model"} <= set(spec["paths"])
        body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["required"] == ["file"] and body["properties"]["file"]["format"] == "binary"
        assert client.get("/docs").status_code == 200
        page = client.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/style.css").status_code == 200
        assert client.get("/static/../app.py").status_code == 404
        assert client.get("/static/%2e%2e/app.py").status_code == 404
    assert health.json()["queued"] == 0


def test_ensemble_returns_votes(rec, model_dir, tiny_encoders, tmp_path, clips):
    from dmha.ensemble import make_ensemble

    other = train_tiny_model(tmp_path / "second", tiny_encoders, seed=1)
    make_ensemble([model_dir, other], tmp_path / "ens")
    ens = EmotionRecognizer.load(tmp_path / "ens")
    with TestClient(create_app(ens)) as client:
        info = client.get("/v1/model").json()
        assert info["ensemble"] is True and len(info["members"]) == 2
        body = post(client, clips[0].read_bytes()).json()
        want = ens.predict(clips[0], transcript=TRANSCRIPT)
        assert body["votes"] == want.votes and len(body["votes"]) == 2
        assert_same(body, want)


def test_model_info_reports_tuned_thresholds(model_dir, tmp_path):
    import shutil

    from dmha.evaluation import tune_model_thresholds

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    tune_model_thresholds(model, model_dir.parent.parent / "corpus" / "manifest.csv", "train", progress=False)
    tuned = json.loads((model / "thresholds.json").read_text())["thresholds"]
    with TestClient(create_app(EmotionRecognizer.load(model))) as client:
        info = client.get("/v1/model").json()
    assert info["thresholds"] == pytest.approx(tuned) and info["members"][0]["thresholds"] == info["thresholds"]
    with TestClient(create_app(EmotionRecognizer.load(model, use_thresholds=False))) as client:
        assert client.get("/v1/model").json()["thresholds"] is None


# --- browser formats -------------------------------------------------------------------------

def test_webm_opus_and_ogg_opus_are_decoded(rec, tmp_path):
    webm = write_webm_opus(tmp_path / "rec.webm")
    wave = decode_upload(webm, "rec.webm", max_duration_s=10)
    assert abs(wave.size / 16000 - 1.5) < 0.05
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / wave.size - 440) < 5  # the tone survived encode + decode
    ogg = tmp_path / "rec.ogg"
    sf.write(ogg, tone(440, 1.2, np.random.default_rng(1), 48000), 48000, format="OGG", subtype="OPUS")
    with TestClient(create_app(rec)) as client:
        for path in (webm, ogg):
            response = post(client, path.read_bytes(), name=path.name)
            assert response.status_code == 200, response.text
            assert abs(sum(response.json()["probs"].values()) - 1) < 1e-5
        long_webm = post(client, webm.read_bytes(), name="rec.webm")
        assert long_webm.status_code == 200
    with TestClient(create_app(rec, ServeSettings(max_duration_s=0.5))) as client:
        response = post(client, webm.read_bytes(), name="rec.webm")
        assert response.status_code == 422 and "limit of 0.5 s" in response.json()["detail"]


def test_playlists_and_unknown_containers_are_never_probed(rec, tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(wav_bytes())
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode()
    with TestClient(create_app(rec)) as client:
        response = post(client, playlist, name="list.m3u8")
        assert response.status_code == 422 and "cannot decode audio" in response.json()["detail"]
        fake_webm = b"\x1aE\xdf\xa3" + b"\x00" * 64  # magic bytes of WebM, nothing valid behind them
        response = post(client, fake_webm, name="bad.webm")
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("bad.webm: ") and str(tmp_path) not in response.text


# --- limits ----------------------------------------------------------------------------------

def test_upload_over_the_size_limit_is_413_streamed_or_declared(rec):
    settings = ServeSettings(max_upload_mb=0.02)  # 20 KB; a 1 s 16-bit clip is 32 KB
    with TestClient(create_app(rec, settings)) as client:
        response = post(client, wav_bytes(1.0))
        assert response.status_code == 413 and "limit of 0.02 MB" in response.json()["detail"]
        assert post(client, wav_bytes(0.3)).status_code == 200
        boundary = "dmhatest"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode()

        def chunked():  # no Content-Length: the limit must be enforced while streaming
            yield head
            for _ in range(64):
                yield b"\x00" * 4096
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post("/v1/predict", content=chunked(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413
        huge = client.post("/v1/predict", content=b"x",
                           headers={"content-type": f"multipart/form-data; boundary={boundary}",
                                    "content-length": str(10 * 2**20)})
        assert huge.status_code == 413  # refused on the declared length, before reading
        assert tmp_files(client) == []


def test_too_long_undecodable_empty_and_malformed_requests(rec, tmp_path):
    with TestClient(create_app(rec, ServeSettings(max_duration_s=0.5, max_transcript_chars=30))) as client:
        too_long = post(client, wav_bytes(1.0), name="long.wav")
        assert too_long.status_code == 422
        assert too_long.json()["detail"] == "long.wav: audio lasts 1.0 s, over this endpoint's limit of 0.5 s"
        text = post(client, b"this is not audio at all", name="notes.wav")
        assert text.status_code == 422 and text.json()["detail"].startswith("notes.wav: cannot decode audio (")
        empty = post(client, b"", name="empty.wav")
        assert empty.status_code == 422 and empty.json()["detail"] == "empty.wav: empty file (0 bytes)"
        nan = io.BytesIO()
        sf.write(nan, np.full(4000, np.nan, np.float32), 16000, format="WAV", subtype="FLOAT")
        bad = post(client, nan.getvalue(), name="nan.wav")
        assert bad.status_code == 422 and "NaN/Inf" in bad.json()["detail"]
        assert post(client, wav_bytes(0.3), transcript="x" * 31).status_code == 422
        assert client.post("/v1/predict", data={"transcript": "hi"}).status_code in (415, 422)
        no_file = client.post("/v1/predict", files={"other": ("a.txt", b"abc")})
        assert no_file.status_code == 422 and "part named 'file'" in no_file.json()["detail"]
        raw = client.post("/v1/predict", content=wav_bytes(0.3), headers={"content-type": "audio/wav"})
        assert raw.status_code == 415
        garbage = client.post("/v1/predict", content=b"--x\r\nnot a header line\r\n\r\n",
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert garbage.status_code in (400, 422)
        no_boundary = client.post("/v1/predict", content=b"abc", headers={"content-type": "multipart/form-data"})
        assert no_boundary.status_code == 400
        two = client.post("/v1/predict", files=[("file", ("a.wav", wav_bytes(0.3))),
                                                ("file", ("b.wav", wav_bytes(0.3)))])
        assert two.status_code == 422 and "one audio file" in two.json()["detail"]
        many = client.post("/v1/predict", files={"file": ("a.wav", wav_bytes(0.3))},
                           data={f"f{i}": "x" for i in range(9)})
        assert many.status_code == 400 and "more than 8 parts" in many.json()["detail"]
        huge_field = client.post("/v1/predict", files={"file": ("a.wav", wav_bytes(0.3))},
                                 data={"transcript": "x" * 200_000})
        assert huge_field.status_code == 413 and "'transcript' is over 128 KB" in huge_field.json()["detail"]
        assert tmp_files(client) == []
        assert client.get("/healthz").status_code == 200  # still up


@pytest.mark.parametrize("name, shown", [
    ("../../etc/passwd", "passwd"), ("..\\..\\windows\\win.ini", "win.ini"), ("/abs/path/x.wav", "x.wav"),
    ("", "upload"), ("..", "upload"), ("a\x00b:c.wav", "a_b_c.wav"), ("  .hidden.wav  ", "hidden.wav")])
def test_path_like_filenames_stay_inside_the_temp_dir(rec, monkeypatch, name, shown):
    seen = []
    real = app_module.decode_upload

    def spy(path, display, limit):
        seen.append((Path(path), display, sorted(Path(path).parent.iterdir())))
        return real(path, display, limit)

    monkeypatch.setattr(app_module, "decode_upload", spy)
    assert safe_name(name) == shown
    with TestClient(create_app(rec)) as client:
        tmp_dir = client.app.state.service.tmp_dir
        outside = {p: p.exists() for p in (tmp_dir.parent / "passwd", tmp_dir.parent.parent / "passwd",
                                           tmp_dir / shown)}
        boundary = "dmhatest"  # built by hand: HTTP clients would escape the name themselves
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
                .encode() + wav_bytes(0.3) + f"\r\n--{boundary}\r\nContent-Disposition: form-data; "
                f"name=\"transcript\"\r\n\r\n{TRANSCRIPT}\r\n--{boundary}--\r\n".encode())
        response = client.post("/v1/predict", content=body,
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 200, response.text
        assert response.json()["path"] == shown
        path, display, listing = seen[0]
        assert path.parent == tmp_dir and path.name.startswith("upload-") and display == shown
        assert listing == [path]  # the only file the service wrote, named by the service
        assert {p: p.exists() for p in outside} == outside
        assert tmp_files(client) == []
    assert not tmp_dir.exists()  # the whole folder goes with the app


def test_queue_full_is_503_and_timeout_is_504(rec, monkeypatch):
    started, release = threading.Event(), threading.Event()
    real = rec.predict_waves

    def blocking(waves, transcripts, *a, **kw):
        started.set()
        release.wait(10)
        return real(waves, transcripts, *a, **kw)

    monkeypatch.setattr(rec, "predict_waves", blocking)
    settings = ServeSettings(queue_size=1, timeout_s=0.5, batch_window_ms=0)
    try:
        with TestClient(create_app(rec, settings)) as client:
            batcher = client.app.state.service.batcher
            wave = np.zeros(8000, np.float32)
            first = batcher.submit(wave, "x")  # the worker takes it and blocks
            assert started.wait(5)
            queued = batcher.submit(wave, "x")  # fills the one queue slot
            full = post(client, wav_bytes(0.3))
            assert full.status_code == 503 and full.headers["retry-after"] == "1"
            assert "queue is full" in full.json()["detail"]
            with pytest.raises(QueueFull):
                batcher.submit(wave, "x")
            release.set()
            first.result(10), queued.result(10)
            release.clear()
            started.clear()
            slow = post(client, wav_bytes(0.3))  # the worker blocks longer than timeout_s
            assert slow.status_code == 504 and "did not finish within 0.5 s" in slow.json()["detail"]
            release.set()
            assert tmp_files(client) == []
            assert client.get("/healthz").json()["status"] == "ok"
    finally:
        release.set()


# --- micro-batching --------------------------------------------------------------------------

def _concurrent_posts(client, payloads) -> list:
    results = [None] * len(payloads)

    def send(i):
        results[i] = post(client, payloads[i][1], name=payloads[i][0])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    return threads, results


def test_micro_batching_really_batches_concurrent_requests(rec, clips, monkeypatch):
    calls, gate = [], threading.Event()
    real = rec.predict_waves

    def counting(waves, transcripts, *a, **kw):
        calls.append(len(waves))
        if len(calls) == 1:
            gate.wait(10)  # hold the first batch so the others pile up in the queue
        return real(waves, transcripts, *a, **kw)

    monkeypatch.setattr(rec, "predict_waves", counting)
    payloads = [(c.name, c.read_bytes()) for c in clips[:6]]
    with TestClient(create_app(rec, ServeSettings(batch_window_ms=50, max_batch=4))) as client:
        first = _concurrent_posts(client, payloads[:1])
        while not calls:
            time.sleep(0.01)
        threads, results = _concurrent_posts(client, payloads[1:])
        batcher = client.app.state.service.batcher
        deadline = time.monotonic() + 10
        while batcher.pending < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for t in [*first[0], *threads]:
            t.join(10)
        results = first[1] + results
        assert calls == [1, 4, 1]  # 1 held, then max_batch, then the rest
        assert client.get("/healthz").json()["batches"] == 3
    for clip, response in zip(clips[:6], results):
        assert response.status_code == 200
        assert_same(response.json(), rec.predict(clip, transcript=TRANSCRIPT), tol=1e-4)  # padded batch


def test_one_bad_item_does_not_fail_its_batch(rec, clips, monkeypatch):
    real, poison = rec.predict_waves, 4321  # a waveform length only the bad request has
    sizes = []

    def flaky(waves, transcripts, *a, **kw):
        sizes.append(len(waves))
        if any(w.size == poison for w in waves):
            raise RuntimeError("model exploded")
        return real(waves, transcripts, *a, **kw)

    monkeypatch.setattr(rec, "predict_waves", flaky)
    bad = io.BytesIO()
    sf.write(bad, np.resize(tone(300, 0.3, np.random.default_rng(0)), poison), 16000, format="WAV")
    payloads = [("bad.wav", bad.getvalue())] + [(c.name, c.read_bytes()) for c in clips[:3]]
    with TestClient(create_app(rec, ServeSettings(batch_window_ms=300, max_batch=8))) as client:
        threads, results = _concurrent_posts(client, payloads)
        for t in threads:
            t.join(20)
        assert client.get("/healthz").json()["retries"] >= 1
    assert max(sizes) > 1  # they really shared a batch before the retry
    assert results[0].status_code == 500
    assert results[0].json()["detail"] == "bad.wav: prediction failed (RuntimeError: model exploded)"
    for clip, response in zip(clips[:3], results[1:]):
        assert response.status_code == 200
        assert_same(response.json(), rec.predict(clip, transcript=TRANSCRIPT), tol=1e-4)


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    """Poll `condition` until it holds (True) or the deadline passes (False): ordering by events, not sleeps."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_batcher_windows_caps_skips_cancelled_and_closes():
    calls, gate = [], threading.Event()

    def predict(waves, transcripts):
        calls.append(list(transcripts))
        gate.wait(5)
        return [f"r{t}" for t in transcripts]

    batcher = MicroBatcher(predict, window_s=0.0, max_batch=1, queue_size=8)
    batcher.start()
    futures = [batcher.submit(np.zeros(1), str(i)) for i in range(4)]
    assert wait_until(lambda: calls == [["0"]])  # the worker holds the first; the others wait in the queue
    assert futures[3].cancel()  # a timed-out request: never predicted
    gate.set()
    assert [f.result(5) for f in futures[:3]] == ["r0", "r1", "r2"]
    assert calls == [["0"], ["1"], ["2"]]  # max_batch=1: no batching at all
    gate.clear()
    held = batcher.submit(np.zeros(1), "held")
    assert wait_until(lambda: calls[-1] == ["held"])  # being predicted when close() comes
    waiting = batcher.submit(np.zeros(1), "waiting")
    call = batcher.submit_call(lambda: "long job")

    def release_once_close_failed_the_waiting():  # only then may the running batch end
        wait_until(lambda: waiting.done() and call.done())
        gate.set()

    releaser = threading.Thread(target=release_once_close_failed_the_waiting)
    releaser.start()
    batcher.close()
    releaser.join(15)
    assert held.result(5) == "rheld"
    with pytest.raises(RuntimeError, match="shutting down"):
        waiting.result(5)
    with pytest.raises(RuntimeError, match="shutting down"):
        call.result(5)
    with pytest.raises(RuntimeError):
        batcher.submit(np.zeros(1), "late")

    order, busy = [], threading.Event()
    batcher = MicroBatcher(lambda w, t: order.append(("batch", list(t))) or list(t), window_s=0.2, max_batch=8,
                           queue_size=8)
    batcher.start()
    blocker = batcher.submit_call(lambda: busy.wait(5))  # the worker waits while the rest is queued behind it
    items = [batcher.submit(np.zeros(1), "a"), batcher.submit(np.zeros(1), "b")]
    job = batcher.submit_call(lambda: order.append(("call",)) or "done")
    items.append(batcher.submit(np.zeros(1), "c"))
    busy.set()
    assert blocker.result(5) is True
    assert job.result(5) == "done" and [f.result(5) for f in items] == ["a", "b", "c"]
    assert order == [("batch", ["a", "b"]), ("call",), ("batch", ["c"])]  # long jobs run alone, in order
    batcher.close()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        ServeSettings(max_batch=0)
    with pytest.raises(ValueError, match="queue_size must be an integer"):
        ServeSettings(queue_size=2.5)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ServeSettings(timeout_s=0)
    assert ServeSettings(batch_window_ms=0).batch_window_ms == 0


# --- long recordings -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    """Three RAVDESS clips with 1.5 s of silence between them (about 15 s)."""
    data = require_ravdess()
    names = ["03-01-05-02-01-01-01.flac", "03-01-03-01-02-01-01.flac", "03-01-01-01-01-01-01.flac"]
    pieces, silence = [], np.zeros(24000, np.float32)
    from dmha.audio import load_audio

    for name in names:
        pieces += [load_audio(data / "audio" / "Actor_01" / name), silence]
    path = tmp_path_factory.mktemp("long") / "meeting.wav"
    sf.write(path, np.concatenate([silence, *pieces]), 16000)
    return path


@pytest.mark.slow  # silero-vad and ASR on 15 s of real speech, twice
def test_predict_long_returns_the_timeline(rec, long_recording):
    if not hasattr(rec, "predict_long"):
        pytest.fail("EmotionRecognizer.predict_long is not there yet (long-recording support)")
    want = rec.predict_long(long_recording).to_dict()
    with TestClient(create_app(rec)) as client:
        response = post(client, long_recording.read_bytes(), name="meeting.wav", transcript=None,
                        url="/v1/predict-long")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["path"] == "meeting.wav" and abs(body["duration"] - want["duration"]) < 1e-6
        assert len(body["segments"]) == len(want["segments"]) >= 2
        for got, exp in zip(body["segments"], want["segments"]):
            assert (got["label"], got["transcript"]) == (exp["label"], exp["transcript"])
            assert abs(got["start"] - exp["start"]) < 1e-6 and abs(got["end"] - exp["end"]) < 1e-6
            assert max(abs(got["probs"][k] - exp["probs"][k]) for k in exp["probs"]) <= 1e-6
        bad = client.post("/v1/predict-long", files={"file": ("m.wav", long_recording.read_bytes())},
                          data={"min_s": "9", "max_s": "3"})
        assert bad.status_code == 422 and "min_s" in bad.json()["detail"]
        assert client.get("/healthz").json()["calls"] == 1  # it ran in the worker thread
        assert tmp_files(client) == []
    with TestClient(create_app(rec, ServeSettings(max_long_duration_s=5))) as client:
        response = post(client, long_recording.read_bytes(), name="meeting.wav", transcript=None,
                        url="/v1/predict-long")  # predict-long takes no transcript (unknown fields are 422)
        assert response.status_code == 422 and "limit of 5 s" in response.json()["detail"]


# --- the command -----------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}


def test_serve_without_the_extra_is_a_one_line_error(model_dir):
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from dmha.cli import main\n"
            f"sys.exit(main(['serve', {str(model_dir)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "pip install 'dmha[serve]'" in done.stderr


@pytest.mark.slow  # a subprocess that imports torch and loads the model: about 10 s
def test_serve_command_runs_the_real_server(model_dir, clips, tmp_path):
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dmha.cli", "serve", str(model_dir), "--port", str(port),
                             "--max-batch", "4", "--tmp-dir", str(tmp_path)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.2)
        info = httpx.get(url + "/v1/model").json()
        assert info["limits"]["max_batch"] == 4
        response = httpx.post(url + "/v1/predict", files={"file": (clips[0].name, clips[0].read_bytes())},
                              data={"transcript": TRANSCRIPT}, timeout=30)
        assert response.status_code == 200 and response.json()["label"] in info["labels"]
        assert [p.name[:11] for p in tmp_path.iterdir()] == ["dmha-serve-"]  # its own, empty, folder
        assert list(next(tmp_path.iterdir()).iterdir()) == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"on http://127.0.0.1:{port}/" in err
    # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit status -15); the folder is gone
    assert proc.returncode in (0, -15) and list(tmp_path.iterdir()) == []


def test_load_benchmark_path_has_no_errors(rec, clips):
    """benchmarks/load.py's client loop, small: 8 concurrent clients against the real uvicorn server."""
    import asyncio
    import importlib.util

    from dmha.serve.server import BackgroundServer

    spec = importlib.util.spec_from_file_location("dmha_load_benchmark", ROOT / "benchmarks" / "load.py")
    load_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_bench)
    payloads = [(c.name, c.read_bytes()) for c in clips[:4]]
    with BackgroundServer(create_app(rec)) as server:
        result = asyncio.run(load_bench.run_load(server.url, payloads, clients=8, requests=2, max_seconds=30))
    assert result["errors"] == 0 and result["statuses"] == {200: 16}, result["error_samples"]
    assert result["server_items"] == 16 and result["mean_batch"] > 1  # concurrent clients shared batches
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"] and result["throughput_rps"] > 0


def test_slow_uploads_and_bursts_beyond_the_queue_on_the_real_server(rec, clips, monkeypatch):
    """Slow-loris uploads get 408, a burst larger than the queue gets 503s, and the service stays up."""
    import asyncio

    import httpx

    from dmha.serve.server import BackgroundServer

    real = rec.predict_waves

    def slow(waves, transcripts, *a, **kw):
        time.sleep(0.1)
        return real(waves, transcripts, *a, **kw)

    monkeypatch.setattr(rec, "predict_waves", slow)
    settings = ServeSettings(upload_timeout_s=0.5, queue_size=2, max_batch=1, batch_window_ms=0)
    app = create_app(rec, settings)
    with BackgroundServer(app) as server:
        boundary = "slow"

        def trickle():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.wav\"\r\n\r\n"
                   .encode())
            for _ in range(20):
                time.sleep(0.1)
                yield b"\x00" * 100

        response = httpx.post(server.url + "/v1/predict", content=trickle(), timeout=10,
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 408 and "within 0.5 s" in response.json()["detail"]

        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                return await asyncio.gather(*(http.post("/v1/predict", data={"transcript": TRANSCRIPT},
                                                        files={"file": (c.name, c.read_bytes())})
                                              for c in clips[:4] * 3))

        statuses = [r.status_code for r in asyncio.run(burst())]
        assert set(statuses) == {200, 503} and statuses.count(200) >= 3, statuses
        assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
        after = httpx.post(server.url + "/v1/predict", files={"file": (clips[0].name, clips[0].read_bytes())},
                           data={"transcript": TRANSCRIPT})
        assert after.status_code == 200
        assert sorted(app.state.service.tmp_dir.iterdir()) == []


def test_serve_help_lists_the_limits(capsys):
    from dmha.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for option in ("--host", "--port", "--max-upload-mb", "--max-duration-s", "--timeout-s", "--queue-size",
                   "--batch-window-ms", "--max-batch"):
        assert option in out


def test_the_model_card_is_served_with_the_model(model_dir, tmp_path):
    """A model directory's MODEL_CARD.md goes out with /v1/model and the page shows it (as text)."""
    import shutil

    carded = tmp_path / "model"
    shutil.copytree(model_dir, carded)
    (carded / "MODEL_CARD.md").write_text("# Card\n\nNot for decisions about people. <script>x</script>\n")
    with TestClient(create_app(EmotionRecognizer.load(carded))) as client:
        assert "Not for decisions about people" in client.get("/v1/model").json()["card"]
        page = client.get("/").text
        assert 'id="model-card"' in page and "<script>x</script>" not in page  # filled in as text, by app.js
        assert "textContent = m.card" in client.get("/static/app.js").text
