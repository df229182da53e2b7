"""Reader for CTranslate2's `model.bin`, so its weights can be reused without CTranslate2's runtime."""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

logger = logging.getLogger(__name__)

# Layout written by ctranslate2.specs.model_spec.ModelSpec._serialize (binary versions 5 and 6):
#   u32 version, str spec_name, u32 revision, u32 n_variables,
#   n × (str name, u8 rank, rank × u32 dim, u8 dtype_id, u32 n_bytes, bytes),
#   u32 n_aliases, n × (str alias, str target); str = u16 length (incl. NUL), utf-8, NUL.
SUPPORTED_BINARY_VERSIONS = (5, 6)
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    """A file that is not a CTranslate2 model.bin this reader understands."""


@dataclass
class CT2Model:
    """Header and the selected variables of a CTranslate2 model.bin."""

    binary_version: int
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)


def _read(f: BinaryIO, fmt: str) -> int:
    """One little-endian scalar."""
    size = struct.calcsize("<" + fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise CT2FormatError("unexpected end of file")
    return struct.unpack("<" + fmt, raw)[0]


def _read_str(f: BinaryIO) -> str:
    """A u16-length-prefixed, NUL-terminated utf-8 string."""
    n = _read(f, "H")
    raw = f.read(n)
    if len(raw) != n or not raw.endswith(b"\0"):
        raise CT2FormatError("corrupt string")
    return raw[:-1].decode("utf-8")


def _decode(raw: bytes, dtype_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """Raw bytes → array; bfloat16 widened to float32 since numpy has no bfloat16."""
    if dtype_id >= len(_DTYPES):
        raise CT2FormatError(f"unknown dtype id {dtype_id}")
    name = _DTYPES[dtype_id]
    if name == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(name).newbyteorder("<")).reshape(shape).copy()


def read_header(path: str | Path) -> tuple[int, str, int]:
    """(binary_version, spec_name, revision) without reading the weights."""
    with open(path, "rb") as f:
        version = _read(f, "I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2FormatError(f"{path}: binary version {version} not in {SUPPORTED_BINARY_VERSIONS}")
        return version, _read_str(f), _read(f, "I")


def _read_variable(f: BinaryIO, entry: tuple[int, tuple[int, ...], int, int], name: str) -> np.ndarray:
    """Load one indexed variable (offset, shape, dtype_id, n_bytes)."""
    offset, shape, dtype_id, n_bytes = entry
    f.seek(offset)
    raw = f.read(n_bytes)
    if len(raw) != n_bytes:
        raise CT2FormatError(f"truncated variable {name}")
    return _decode(raw, dtype_id, shape)


def read_model_bin(path: str | Path, keep: Callable[[str], bool] = lambda name: True) -> CT2Model:
    """Parse `path`, loading only the variables (and aliases) whose name `keep` accepts."""
    with open(path, "rb") as f:
        version = _read(f, "I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2FormatError(f"{path}: binary version {version} not in {SUPPORTED_BINARY_VERSIONS}")
        model = CT2Model(version, _read_str(f), _read(f, "I"))
        index = {}  # name → (offset, shape, dtype_id, n_bytes); weights are read only when wanted
        for _ in range(_read(f, "I")):
            name = _read_str(f)
            shape = tuple(_read(f, "I") for _ in range(_read(f, "B")))
            dtype_id, n_bytes = _read(f, "B"), _read(f, "I")
            index[name] = (f.tell(), shape, dtype_id, n_bytes)
            f.seek(n_bytes, 1)
        # CTranslate2 stores identical tensors once and aliases the rest, possibly to a variable we skip.
        aliases = [(_read_str(f), _read_str(f)) for _ in range(_read(f, "I"))]
        wanted = [(name, name) for name in index if keep(name)] + [(a, t) for a, t in aliases if keep(a)]
        for name, target in wanted:
            if target not in index:
                raise CT2FormatError(f"{path}: alias {name} points to missing {target}")
            model.variables[name] = _read_variable(f, index[target], target)
    logger.debug("read %d variables of %s from %s", len(model.variables), model.spec_name, path)
    return model


def dequantized(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Variable `name` as float32; int8/int16 weights are divided by their per-row `<name>_scale`."""
    value = variables[name]
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    scale = variables.get(name + "_scale")
    if scale is None:
        raise CT2FormatError(f"{name} is {value.dtype} but has no {name}_scale")
    # CTranslate2 quantises as round(w * scale) with one scale per output row.
    return (value.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (value.ndim - 1))))
