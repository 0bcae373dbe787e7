"""Identities of what determines an answer besides the settings: the checkpoint and the data files.

A reused answer is right only if the checkpoint, the data and the settings are the ones that produced it. Settings
are plain values; the checkpoint and the data are files that can change in place (a fine-tune saved over the same
folder, a re-downloaded task). Their identities here are cheap (names, sizes, modification times; a hub snapshot's
commit) and change whenever the files do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("lmms_futuremask")


def digest(value: Any, length: int = 16) -> str:
    """A short stable hash of any JSON-able value (dict keys sorted; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def file_stamp(path: str | os.PathLike) -> list[Any]:
    """``[name, size, mtime_ns]`` of a file (following links), or ``[name, None, None]`` if it is missing."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return [path.name, None, None]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def folder_stamp(folder: str | os.PathLike) -> list[Any]:
    """Every file under ``folder`` (relative name, size, mtime), in name order; hidden files left out."""
    root = Path(folder)
    stamps = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stamps.append([str(relative), *file_stamp(path)[1:]])
    return stamps


def checkpoint_identity(pretrained: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies the weights, config and processor files ``pretrained`` names.

    A local folder: every file's name, size and modification time (a checkpoint overwritten in place changes it).
    A hub id: the commit of the snapshot in the local hub cache (after loading, transformers has put it there);
    if none can be found, the id and revision, with a warning that answers are then keyed on the name only.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return {"local": str(path.resolve()), "files": folder_stamp(path)}
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(pretrained, revision=revision, local_files_only=True))
        return {"hub": pretrained, "commit": snapshot.name}
    except Exception as error:  # noqa: BLE001 - any failure just means no snapshot to identify
        logger.warning(
            "cannot find a cached snapshot of %s (%s); reused answers are keyed on its name and revision only",
            pretrained,
            error,
        )
        return {"hub": pretrained, "revision": revision}


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, _size: int, _mtime_ns: int) -> str:
    """sha256 of a file's bytes; size and time are part of the cache key, so a changed file is read again."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """The content hash of a file, computed once per (path, size, mtime) in a process."""
    stat = Path(path).stat()
    return _content_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
