"""What dmha may load from files it did not write: JSON and safetensors, never pickle unless asked.

A pickle runs arbitrary code when loaded, so a model downloaded from a stranger could take over
the machine. Model directories are JSON + safetensors only, checkpoints are read with
`weights_only=True`, and encoder weights come from safetensors files; an encoder that has only
pickle weights (`pytorch_model.bin`) is refused unless the user passes `--allow-pickle` (or sets
DMHA_ALLOW_PICKLE=1), which no file can do on its own. Remote code is never trusted.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "DMHA_ALLOW_PICKLE"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


class UntrustedFileError(ValueError):
    """Loading this would unpickle (or run) code from a file the user has not vouched for."""


def pickle_allowed() -> bool:
    return os.environ.get(ENV) == "1"


def allow_pickle() -> None:
    """The user vouches for the pickle files they point dmha at (inherited by worker processes)."""
    os.environ[ENV] = "1"


def weights_kwargs() -> dict:
    """from_pretrained options: safetensors only (unless pickle is allowed), no remote code."""
    return {"use_safetensors": None if pickle_allowed() else True, "trust_remote_code": False}


def explain_missing_safetensors(name_or_path, err: Exception) -> Exception:
    """Turn transformers' 'no model.safetensors' error into a one-line refusal that says what to do."""
    path = Path(str(name_or_path))
    pickled = [p for p in PICKLE_WEIGHTS if (path / p).exists()] if path.is_dir() else []
    if not pickle_allowed() and (pickled or "safetensors" in str(err).lower()):
        found = f" (it has {', '.join(pickled)})" if pickled else ""
        return UntrustedFileError(f"{name_or_path}: no safetensors weights{found}; dmha does not unpickle files "
                                  "it did not write. Convert the weights to safetensors, or rerun with "
                                  "--allow-pickle if you trust this model")
    return err
