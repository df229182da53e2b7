"""The web page at `/`, driven end to end in real headless Chromium against the real uvicorn server."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import require_ravdess

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx")

from dmha.inference import EmotionRecognizer  # noqa: E402
from dmha.serve.app import create_app  # noqa: E402
from dmha.serve.server import BackgroundServer  # noqa: E402
from conftest import train_tiny_model  # noqa: E402
from helpers import CHROMIUM, CHROMIUM_ARGS, browser_or_skip  # noqa: E402

# Slow: a real browser against the real server, and the real ASR (the page shows its transcript).
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# A fake microphone for the recording test.
ARGS = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
CLIP = "audio/Actor_01/03-01-05-02-01-01-01.flac"  # angry, "Kids are talking by the door"


@pytest.fixture(scope="module")
def server(tiny_encoders, tmp_path_factory):
    model = train_tiny_model(tmp_path_factory.mktemp("web_model"), tiny_encoders, labels=EMOTIONS)
    with BackgroundServer(create_app(EmotionRecognizer.load(model))) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1180, "height": 820}, device_scale_factor=1)
    context.grant_permissions(["microphone"], origin=server.url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('emotions')")
    yield page
    context.close()
    assert errors == [], errors


def _keep(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, results / name)
    return shot


def _wait_done(page, timeout_ms: int = 60_000) -> None:
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=timeout_ms)
    assert page.evaluate("document.body.dataset.state") == "done", page.text_content("#status")


def test_upload_shows_the_same_emotion_as_the_api(page, server, tmp_path):
    clip = require_ravdess() / CLIP
    api = httpx.post(server.url + "/v1/predict", files={"file": (clip.name, clip.read_bytes())}, timeout=60).json()
    page.set_input_files("#file", str(clip))
    page.click("#analyse")
    _wait_done(page)
    assert page.text_content("#label") == api["label"]
    assert page.text_content("#transcript-out") == api["transcript"]
    assert "door" in api["transcript"].lower()  # ASR (tiny.en) ran on the upload
    assert page.locator("#bars .bar-fill").count() == len(EMOTIONS)
    labels = httpx.get(server.url + "/v1/model").json()["labels"]  # the bars follow the model's order
    assert page.locator("#bars .bar-name").all_text_contents() == labels
    shown = page.locator("#bars .bar-value").all_text_contents()
    assert shown == [f"{100 * api['probs'][e]:.1f}%" for e in labels]
    assert clip.name in page.text_content("#status")
    assert _keep(page, tmp_path, "web_page.png").stat().st_size > 10_000


@pytest.mark.speech_gate
def test_recording_from_the_microphone_is_decoded(page, server):
    page.click("#record")
    page.wait_for_function("document.getElementById('record-text').textContent === 'Stop'")
    page.wait_for_timeout(1500)
    page.click("#record")  # stop → upload the webm/opus recording
    _wait_done(page)
    # Chromium's fake microphone plays beeps, not speech: the page shows an emotion or, when the speech gate
    # refuses the recording, says why; never both, never neither
    refused = page.text_content("#confidence").startswith("No emotion: no speech found")
    assert page.is_hidden("#label") == refused
    assert refused or page.text_content("#label") in EMOTIONS
    assert "recording.webm" in page.text_content("#status")


@pytest.mark.speech_gate
def test_silence_gets_no_emotion_and_a_reason(page, server, tmp_path):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * 16000, np.float32), 16000)
    api = httpx.post(server.url + "/v1/predict", files={"file": (silence.name, silence.read_bytes())}, timeout=60).json()
    page.set_input_files("#file", str(silence))
    page.click("#analyse")
    _wait_done(page)
    assert page.is_hidden("#label") and page.locator("#bars .bar-fill").count() == 0
    assert page.text_content("#confidence") == f"No emotion: {api['reason']}"


def test_long_file_shows_a_timeline(page, server, tmp_path):  # silero-vad and ASR on 17 s of real speech, twice
    data = require_ravdess()
    from dmha.audio import load_audio

    silence = np.zeros(24000, np.float32)
    parts = [silence]
    for name in ("03-01-05-02-01-01-01.flac", "03-01-03-01-02-01-01.flac", "03-01-04-01-01-01-01.flac"):
        parts += [load_audio(data / "audio" / "Actor_01" / name), silence]
    long_file = tmp_path / "conversation.wav"
    sf.write(long_file, np.concatenate(parts), 16000)
    api = httpx.post(server.url + "/v1/predict-long", files={"file": (long_file.name, long_file.read_bytes())},
                     timeout=120)
    assert api.status_code == 200, api.text
    segments = api.json()["segments"]
    page.check("#long")
    page.set_input_files("#file", str(long_file))
    page.click("#analyse")
    _wait_done(page, 120_000)
    assert page.locator("#timeline .seg").count() == len(segments) >= 2
    rows = page.locator("#segments tbody tr")
    assert [rows.nth(i).locator("td").nth(2).text_content() for i in range(rows.count())] == \
        [s["label"] for s in segments]
    _keep(page, tmp_path, "web_page_timeline.png")
