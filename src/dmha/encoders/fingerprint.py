"""Cheap fingerprints of model weights, so feature caches notice when an encoder changes."""
from __future__ import annotations

import hashlib
from pathlib import Path

# Files whose size/mtime stand for the weights (reading gigabytes to hash them would be too slow).
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def dir_fingerprint(path: str | Path) -> str:
    """Hash of config.json's bytes plus the name, size and mtime of every weight file in `path`."""
    root = Path(path)
    digest = hashlib.sha256()
    config = root / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for file in sorted(root.rglob("*")):
        if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or ".bin." in file.name):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def weights_id(kind: str, name_or_path: str | Path, label: str | None = None, revision: str | None = None) -> str:
    """`kind:label@fingerprint` for a directory (label: its absolute path by default), else `kind:id@revision`."""
    path = Path(name_or_path)
    if path.is_dir():
        return f"{kind}:{label or path.resolve()}@{dir_fingerprint(path)}"
    return f"{kind}:{label or name_or_path}@{revision or 'main'}"
