"""Where dmha keeps things it builds itself (joined model files, feature cache, weight digests)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of dmha's own cache: $DMHA_HOME, else $XDG_CACHE_HOME/dmha, else ~/.cache/dmha."""
    if os.environ.get("DMHA_HOME"):
        return Path(os.environ["DMHA_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dmha"


def models_dir() -> Path:
    """Models dmha assembles from packaged weights (e.g. the two-part Whisper base)."""
    return home() / "models"


def features_dir() -> Path:
    """Default feature cache."""
    return home() / "features"


def digests_dir() -> Path:
    """SHA-256 digests of encoder weight files, one small file per version of each (encoders.fingerprint)."""
    return home() / "digests"
