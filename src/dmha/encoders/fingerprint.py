"""Content fingerprints of model weights: one identity for the same weights on every machine.

A fingerprint names what an encoder computes with: the bytes of its config.json and the SHA-256 of
every weight file's content. The feature store keys its entries by it, and a model directory
stores the one its head was trained on, so `EmotionRecognizer` can tell when the encoder it finds
here is another one.

Why hash the whole content, and cache it: the fingerprint used to hash each weight file's size and
modification time, so a model.bin that dmha assembles on each machine (same bytes everywhere) got
a different identity on each, and every fresh install warned that the encoder differs from
training. Sampling a few chunks of each file would be fast and content-based too, but a fine-tune
that changes some tensors and not others (same size, same header) can leave every sampled chunk
alike, and the feature store would then serve the old encoder's features as the new one's. The
full SHA-256 has no such blind spot and costs one read of the file (about 0.1 s per 100 MB); the
hash is kept in dmha's cache folder (dmha.paths.digests_dir) under the file's path, size,
modification time, status-change time and inode, so later runs only stat the file. Touching or
copying a file re-hashes it to the same value; editing it in place changes its modification or
status-change time (which no program can set back), so a stale hash is never reused. Without a
writable cache folder every process hashes afresh.

Identities written before this scheme end in `@` and 16 hex digits of the old size/mtime hash;
`same_encoder` cannot check their weights and compares the rest (encoder, label, settings) only.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import NamedTuple

from dmha.fileio import atomic_write_text
from dmha.paths import digests_dir

logger = logging.getLogger(__name__)

# The files that hold weights; others (tokenizers, vocabularies) do not change what an encoder computes.
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
CONTENT_PREFIX = "content-"  # marks a content fingerprint; the old size/mtime ones are bare hex
_LEGACY = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEMO: dict[str, str] = {}  # cache key → digest, for this process


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex of a file's bytes, read once per version of the file and then taken from the cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
    if key in _MEMO:
        return _MEMO[key]
    entry = digests_dir() / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.sha256"
    try:
        cached = entry.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        cached = ""
    if not _SHA256.fullmatch(cached):
        with open(path, "rb") as handle:
            cached = hashlib.file_digest(handle, "sha256").hexdigest()
        try:
            atomic_write_text(entry, cached + "\n")
        except OSError as err:  # a read-only cache: hash again next time
            logger.debug("cannot cache the digest of %s in %s: %s", path, entry, err)
    _MEMO[key] = cached
    return cached


def dir_fingerprint(path: str | Path) -> str:
    """`content-` + 16 hex of config.json's bytes plus the name, size and SHA-256 of every weight file in `path`.

    The same files give the same fingerprint wherever they lie and whenever they were written.
    Example: `dir_fingerprint("models/whisper-base-ct2")  # 'content-5c0e…'`.
    """
    root = Path(path)
    digest = hashlib.sha256()
    config = root / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for file in sorted(root.rglob("*")):
        if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or ".bin." in file.name):
            name = file.relative_to(root).as_posix()
            digest.update(f"{name}:{file.stat().st_size}:{file_sha256(file)}\n".encode())
    return CONTENT_PREFIX + digest.hexdigest()[:16]


def weights_id(kind: str, name_or_path: str | Path, label: str | None = None, revision: str | None = None) -> str:
    """`kind:label@fingerprint` for a directory (label: its absolute path by default), else `kind:id@revision`."""
    path = Path(name_or_path)
    if path.is_dir():
        return f"{kind}:{label or path.resolve()}@{dir_fingerprint(path)}"
    return f"{kind}:{label or name_or_path}@{revision or 'main'}"


class Identity(NamedTuple):
    """An encoder identity `kind:label@weights|setting|...` taken apart."""

    encoder: str  # kind:label
    weights: str  # fingerprint or hub revision
    settings: str  # everything after the first |

    @classmethod
    def parse(cls, identity: str) -> "Identity":
        head, _, settings = identity.partition("|")
        encoder, _, weights = head.rpartition("@")
        return cls(encoder or head, weights if encoder else "", settings)

    @property
    def legacy(self) -> bool:
        """Whether the weights part is an old size/mtime fingerprint, which says nothing across machines."""
        return bool(_LEGACY.fullmatch(self.weights))


def same_encoder(found: str, expected: str) -> bool:
    """Whether the encoder identity found here (`found`) is the one a model was trained with (`expected`).

    An `expected` with an old size/mtime fingerprint is compared without its weights part: it was
    only ever meaningful on the machine that wrote it.
    Example: `same_encoder(encoder.info.identity, bundle.speech.identity)`.
    """
    if found == expected:
        return True
    here, there = Identity.parse(found), Identity.parse(expected)
    return there.legacy and (here.encoder, here.settings) == (there.encoder, there.settings)


def mismatch(found: str, expected: str) -> str:
    """What differs between two encoder identities, in words (for a warning or an error)."""
    here, there = Identity.parse(found), Identity.parse(expected)
    if here.encoder != there.encoder:
        return f"another encoder: {found} here, {expected} at training"
    if here.weights != there.weights and not there.legacy:
        return (f"{here.encoder} with other weights: {here.weights} here, {there.weights} at training "
                "(another version of the model or of the package that ships it)")
    return f"{here.encoder} with other settings: {here.settings or 'none'} here, {there.settings or 'none'} at training"
