"""Model names → local directories: a model/ensemble directory as is, or a Hugging Face Hub repository.

A model directory is JSON + safetensors (+ an optional training_log.csv), so a Hub repository that
holds one is fetched with exactly those patterns: nothing executable or pickled is ever downloaded.
The Hub copy lives in the usual Hugging Face cache, so `HF_HUB_OFFLINE=1` works once it is there.
"""
from __future__ import annotations

import re
from pathlib import Path

from .modeldir import ModelDirError
from .pretrained import path_of

MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.csv"]  # config, labels, thresholds, ensemble, weights, log
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repository ids


def looks_like_repo_id(name: str) -> bool:
    """`owner/name` with no path syntax beyond the one slash (`./x`, `/abs`, `a/b/c` are paths)."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def resolve_model(name_or_dir: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local directory of a model: an existing directory, a bundled model's name (dmha.pretrained), else
    a Hub repository id fetched into the cache.

    Raises ModelDirError (one line) when it is neither, when the Hub cannot be reached and the
    repository is not cached, or when the revision does not exist.
    """
    path = Path(name_or_dir).expanduser()
    bundled = None if path.exists() else path_of(str(name_or_dir))
    if bundled is not None:  # a model shipped with dmha (dmha.pretrained): no download
        if revision is not None:
            raise ModelDirError(f"{name_or_dir}: a bundled model has no revisions")
        return bundled
    if path.exists() or not looks_like_repo_id(str(name_or_dir)):
        if revision is not None:
            raise ModelDirError(f"{name_or_dir}: a revision only applies to a Hugging Face Hub repository id")
        return path  # load_members says what is wrong with a path that is not a model directory
    return _snapshot(str(name_or_dir), revision, cache_dir)


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=MODEL_FILE_PATTERNS)
    except RepositoryNotFoundError:
        raise ModelDirError(f"{where}: not a local directory, nor a repository on the Hugging Face Hub") from None
    except RevisionNotFoundError:
        raise ModelDirError(f"{where}: no such revision on the Hugging Face Hub") from None
    except IncompleteSnapshotError:
        raise ModelDirError(f"{where}: the cached copy is incomplete and the Hub cannot be reached") from None
    except LocalEntryNotFoundError:
        raise ModelDirError(f"{where}: not a local directory, and not in the Hugging Face cache while the Hub "
                            "cannot be reached (offline or HF_HUB_OFFLINE=1)") from None
    except HfHubHTTPError as err:
        raise ModelDirError(f"{where}: the Hugging Face Hub refused it ({str(err).splitlines()[0]})") from None
    except OSError as err:  # network errors and unreadable caches
        raise ModelDirError(f"{where}: could not be fetched from the Hugging Face Hub ({err})") from None
    return Path(folder)
