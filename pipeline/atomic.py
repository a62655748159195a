"""Writing a file so that no reader ever sees half of it: write a hidden temporary, then rename.

Every file the tool writes whole (shards, checkpoints, stats, manifest, card, labels,
exports, embedding-store shards, converted models) goes through ``atomic_path`` or, when its
bytes are already in memory, ``storage.write_bytes``; locally both are the one temporary and
rename, ``storage.replacing``. The temporary is ``.NAME.<machine>-<pid>-<random>.tmp`` beside
the target, one per writer (two processes writing one file at once never share it), hidden
from globs over ``*.parquet``, and removed by a later start once its writer is gone
(``storage.stale_temporary``).

On an object store (``pipeline/storage.py``) nothing renames: the temporary is a local
file, uploaded whole once it is complete (one PUT is atomic there), so a crash while
writing leaves nothing in the store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .storage import TEMPORARY_GLOB, is_remote, is_temporary, replacing, temporary_of, write_bytes

__all__ = ["TEMPORARY_GLOB", "atomic_path", "is_temporary", "temporary_of", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a folder); on success it replaces ``path``."""
    if is_remote(path):
        with _uploaded(path) as tmp:
            yield tmp
        return
    with replacing(Path(path)) as tmp:
        yield tmp


@contextlib.contextmanager
def _uploaded(path) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="synth-upload-") as folder:
        tmp = Path(folder) / path.name
        yield tmp
        if tmp.is_dir():
            path.fs.put(str(tmp), path.path, recursive=True)
        else:
            path.fs.put_file(str(tmp), path.path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False))
