"""Packaging like a library: a wheel builds from the checkout, carries the bundled models, the example
clips and the service's page, and the installed copy (not the checkout) predicts with the bundled model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=600)
    (found,) = out.glob("dmha-*.whl")
    return found


def bundled_folders() -> list[str]:
    root = ROOT / "src" / "dmha" / "pretrained"
    return sorted(p.name for p in root.iterdir() if (p / "bundled.json").is_file())


@pytest.mark.slow
def test_the_wheel_carries_models_examples_and_the_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = bundled_folders()
    assert folders, "no bundled model in src/dmha/pretrained (make ready-model)"
    for folder in folders:
        for name in ("config.json", "model.safetensors", "labels.json", "calibration.json", "bundled.json",
                     "MODEL_CARD.md", "NOTICE.md"):
            assert f"dmha/pretrained/{folder}/{name}" in names, f"{folder}/{name} missing from the wheel"
    clips = [line.split(",")[0] for line in (ROOT / "src/dmha/examples/clips.csv").read_text().splitlines()[1:]]
    for clip in clips:
        assert f"dmha/examples/{clip}" in names
    assert {"dmha/examples/PROVENANCE.md", "dmha/examples/clips.csv", "dmha/serve/static/index.html"} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    for requirement in ("scipy", "huggingface_hub", "av"):  # imported by the core: declared
        assert f"Requires-Dist: {requirement}" in text
    assert "Provides-Extra: serve" in text and "Provides-Extra: dev" in text
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.mark.slow
def test_the_installed_wheel_predicts_with_the_bundled_model(wheel, tmp_path):
    """Installed into its own folder (dependencies from this environment), run from elsewhere: the copy in
    the wheel, not the checkout, finds its bundled model and example clips."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=600)
    script = ("import json, dmha; from dmha.examples import clips; from dmha.pretrained import bundled, DEFAULT;"
              "from dmha import EmotionRecognizer;"
              "p = EmotionRecognizer()(str(clips()[0].path), top_k=1)[0];"
              "print(json.dumps({'file': dmha.__file__, 'models': list(bundled()), 'clip': str(clips()[0].path),"
              "'top': p, 'default': DEFAULT}))")
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(target) and Path(got["clip"]).is_relative_to(target)
    assert got["default"] in got["models"] and 0 < got["top"]["score"] <= 1
