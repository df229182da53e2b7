"""The documentation site opened from disk, as the README says (`make docs`, then `site/index.html`), in
real headless Chromium: the navigation leads to pages (not to folders), search works offline, and no page
asks another host for anything. The site is built once, into a temp folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, browser_or_skip

pytestmark = pytest.mark.slow  # a site build (a few seconds) and a browser
ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("file:", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install dmha[docs]) is not installed")
    out = tmp_path_factory.mktemp("docs_site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    """index.html from file://; every request it makes is recorded, every page error kept."""
    context = browser.new_context()
    page = context.new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto((site / "index.html").as_uri())
    yield page
    context.close()


def test_every_navigation_link_is_a_page_on_disk(page, site):
    hrefs = page.eval_on_selector_all("nav.md-nav--primary a.md-nav__link[href]", "links => links.map(a => a.href)")
    pages = [h.split("#")[0] for h in hrefs if h.startswith("file:") and "#" not in h]
    assert len(pages) >= 20, hrefs
    for href in pages:
        assert href.endswith(".html"), f"{href}: a folder link, which file:// shows as a listing"
        assert Path(href.removeprefix("file://")).is_file(), href
    page.click("nav.md-nav--primary a.md-nav__link[href$='getting-started/install.html']")
    page.wait_for_load_state()
    assert page.url.endswith("getting-started/install.html")
    assert page.text_content("article h1").rstrip("¶") == "Install"


def _search(page, query: str) -> list[str]:
    """Type into the header's search box; the titles of the results (the search worker answered)."""
    page.fill("input.md-search__input", query)
    page.wait_for_selector(".md-search-result__item", timeout=30_000)
    return page.locator(".md-search-result__item h1, .md-search-result__item h2").all_text_contents()


def test_search_works_from_disk(page):
    titles = _search(page, "speaker normalisation")
    assert any("Speaker normalisation" in t for t in titles), titles
    assert "matching document" in page.text_content(".md-search-result__meta")
    assert page.errors == [], page.errors


def test_the_site_asks_no_other_host(page, site):
    assert _search(page, "manifest")
    elsewhere = [url for url in page.requests if not url.startswith(LOCAL)]
    assert elsewhere == [], elsewhere
    for html in (site / "index.html", site / "guide" / "encoders.html"):
        text = html.read_text(encoding="utf-8")
        assert "unpkg.com" not in text and "fonts.googleapis" not in text, html
