"""Models that ship inside the package: recognise emotion in anyone's recording with no training.

Each bundled model is a model directory under this package (config.json, model.safetensors,
labels.json, calibration.json) with MODEL_CARD.md (what it is for, what it was trained on, what it
scores and where it fails), its licence notice, and `bundled.json`: its name, classes, training data
and licence, which `dmha models` lists. A name resolves before any Hub id, so `predict`, `serve`,
`EmotionRecognizer.from_pretrained(name)` and `EmotionRecognizer()` (the default) need no download.
They are trained by `make ready-model` from the corpora in ../shared (configs/ready/).
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

INFO_FILE = "bundled.json"
CARD_FILE = "MODEL_CARD.md"
DEFAULT = "dmha-acted-en"  # what `dmha predict FILE`, `dmha serve` and `EmotionRecognizer()` use


class NoBundledModel(LookupError):
    """A bundled model name that this installation does not have."""


def _root() -> Path:
    return Path(str(resources.files(__name__)))


def bundled() -> dict[str, Path]:
    """{name: model directory} of every model shipped in this installation."""
    found = {}
    for folder in sorted(p for p in _root().iterdir() if (p / INFO_FILE).is_file()):
        found[json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))["name"]] = folder
    return found


def path_of(name: str) -> Path | None:
    """The model directory of a bundled model, or None when `name` is not one."""
    return bundled().get(str(name))


def default_model() -> Path:
    """The default bundled model's directory."""
    path = path_of(DEFAULT)
    if path is None:
        raise NoBundledModel(f"this installation has no bundled model {DEFAULT!r}: name a model directory or a "
                             "Hugging Face Hub id (or run `make ready-model` in a checkout)")
    return path


_LINK = re.compile(r"\[([^\]\[]+)\]\(([^)\s]+)\)")


def card_text(markdown: str) -> str:
    """A model card as a reader sees it outside the repository (terminal, service page): each cited figure
    `[0.687](../results/cv.json#summary...)` becomes `0.687`, since its link points into a checkout."""
    return _LINK.sub(lambda m: m[1] if "#" in m[2] or not m[2].startswith(("http://", "https://")) else m[0], markdown)


def describe(name: str) -> dict:
    """bundled.json of a bundled model, with its card's text under `card` (figures without their links)."""
    path = path_of(name)
    if path is None:
        raise NoBundledModel(f"no bundled model {name!r} (bundled: {', '.join(bundled()) or 'none'})")
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    card = path / CARD_FILE
    return {**info, "default": info["name"] == DEFAULT, "card": card_text(card.read_text(encoding="utf-8")) if card.is_file() else ""}
