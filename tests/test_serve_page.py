"""The service's own pages offline: /docs and /redoc load every script and style from the service (FastAPI's
defaults fetch Swagger UI and ReDoc from a CDN, a blank page without internet), and the page at `/` says
"speech only" for a model that reads no transcript, instead of naming an ASR it never runs."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import write_tone_corpus  # noqa: E402
from dmha.config import load  # noqa: E402
from dmha.experiment import train  # noqa: E402
from dmha.inference import EmotionRecognizer  # noqa: E402
from dmha.serve.app import create_app  # noqa: E402
from dmha.serve.server import BackgroundServer  # noqa: E402
from helpers import CHROMIUM, CHROMIUM_ARGS, browser_or_skip, wav_bytes  # noqa: E402

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def speech_only_model(tiny_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_only_page")
    manifest = write_tone_corpus(root / "corpus", n_per_class=4)
    config = load(None, [f"encoders.speech={tiny_encoders['speech']}", "encoders.text=none",
                         f"features.cache_dir={root / 'cache'}", "train.max_epochs=1", "train.batch_size=4",
                         "model.hidden_layers=1", "train.crop_s=0"])
    train(manifest, root / "run", config, progress=False)
    return root / "run" / "model"


@pytest.fixture(scope="module")
def client(serve_model_dir):
    with TestClient(create_app(EmotionRecognizer.load(serve_model_dir))) as running:
        yield running


def _assets(html: str) -> list[str]:
    return [next(g for g in groups if g) for groups in ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_pages_load_everything_from_the_service(client, page):
    response = client.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assets = _assets(response.text)
    assert any(a.endswith(".js") for a in assets), assets  # the Swagger UI / ReDoc script itself
    assert "/openapi.json" in assets
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from another host"
        fetched = client.get(url)
        assert fetched.status_code == 200 and fetched.content, f"{page}: {url} answers {fetched.status_code}"


def test_model_info_says_whether_the_model_reads_transcripts(client, speech_only_model, serve_model_dir):
    info = client.get("/v1/model").json()
    assert info["reads_text"] is True and info["encoders"]["asr"]  # the tone model has a text branch
    with TestClient(create_app(EmotionRecognizer.load(speech_only_model))) as speech_only:
        info = speech_only.get("/v1/model").json()
    assert info["reads_text"] is False
    assert info["encoders"]["text"] == "none" and info["encoders"]["asr"] is None  # it runs no ASR
    assert info["members"][0]["encoders"]["asr"] is None


# --- in a real browser -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, url: str):
    context = browser.new_context(viewport={"width": 1180, "height": 820})
    page = context.new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url)
    return context, page


@pytest.mark.slow
def test_swagger_ui_renders_offline(browser, serve_model_dir):
    with BackgroundServer(create_app(EmotionRecognizer.load(serve_model_dir))) as server:
        context, page = _open(browser, server.url + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)  # the operations, drawn from /openapi.json
        paths = page.locator(".opblock-summary-path").all_text_contents()
        context.close()
    assert {"/v1/predict", "/v1/predict-long", "/v1/model"} <= {p.replace("\u200b", "") for p in paths}, paths
    assert [u for u in page.requests if not u.startswith(server.url)] == []
    assert page.errors == []


@pytest.mark.slow
def test_page_of_a_speech_only_model_says_speech_only(browser, speech_only_model, tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes())
    with BackgroundServer(create_app(EmotionRecognizer.load(speech_only_model))) as server:
        context, page = _open(browser, server.url + "/")
        page.wait_for_function("document.getElementById('model-info').textContent.includes('emotions')")
        info = page.text_content("#model-info")
        assert "speech only" in info and "(ASR)" not in info and "tiny.en" not in info, info
        assert not page.is_visible("#transcript")  # nothing to type: the model reads no transcript
        page.set_input_files("#file", str(clip))
        page.click("#analyse")
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=60_000)
        assert page.evaluate("document.body.dataset.state") == "done", page.text_content("#status")
        assert page.is_visible("#label")
        assert not page.is_visible("#transcript-out")  # no "(no speech recognised)" for a model without ASR
        assert "no speech recognised" not in page.inner_text("#result")
        context.close()
    assert page.errors == []
