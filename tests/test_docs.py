"""The documentation site: generated reference pages match the code, and the site builds with
`mkdocs build --strict` (a broken link, a missing anchor or an API reference that cannot be
resolved fails it), as `make docs` builds it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gen_reference  # noqa: E402


@pytest.mark.parametrize("page", sorted(gen_reference.PAGES))
def test_generated_reference_page_is_current(page):
    written = gen_reference.PAGES[page].read_text(encoding="utf-8")
    assert written == gen_reference.pages()[page], (
        f"{gen_reference.PAGES[page].relative_to(ROOT)} is stale: run `make docs` (tools/gen_reference.py)")


def test_reference_pages_name_every_config_key_and_command():
    import dataclasses

    from dmha.cli import _parser
    from dmha.config import Config

    configuration = gen_reference.pages()["configuration"]
    for section in ("encoders", "model", "train", "features", "aug", "decision"):
        for name in (f.name for f in dataclasses.fields(getattr(Config(), section))):
            assert f"`{section}.{name}`" in configuration, f"{section}.{name} missing from the configuration page"
    cli = gen_reference.pages()["cli"]
    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in sub.choices:
        assert f"## dmha {command}" in cli


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (pip install dmha[docs]) is not installed")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    api = tmp_path / "site" / "reference" / "api.html"  # page.html, not page/index.html: the site works from disk
    assert api.is_file()
    api = api.read_text(encoding="utf-8")
    assert "EmotionRecognizer" in api and "predict_long" in api  # mkdocstrings rendered the docstrings
