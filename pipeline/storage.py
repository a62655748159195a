"""Where files live: local paths and fsspec URLs (``s3://``, ``gs://``, ``hf://``, ...) behind one API.

A local path is a ``pathlib.Path``, so everything local behaves as it always did. A URL is a
``upath.UPath`` over its fsspec filesystem, with the pathlib methods the run folder uses
(``/``, ``exists``, ``rglob``, ``read_text``, ``unlink``). What pathlib cannot say for an
object store lives here: a whole-object write (one PUT, atomic on S3 and GCS), a
create-if-absent write (S3's ``If-None-Match``), a file opened for reading with no
read-ahead (so the bytes a reader counts are the bytes fetched), and a file's identity.

Credentials and endpoints come from where the filesystems read them (``AWS_*`` variables and
profiles, ``AWS_ENDPOINT_URL`` for S3-compatible stores, ``HF_TOKEN`` and ``HF_ENDPOINT`` for
``hf://``); a URL that carries a secret is refused (``check_url``), so none reaches a log, the
manifest or the card.

Whole files (``atomic_path``, ``write_bytes``, ``write_text``, ``write_json``): every file the
tool writes whole (shards, checkpoints, stats, manifest, card, labels, exports,
embedding-store shards, converted models) goes through one of them. Locally all are the one
temporary-then-rename, ``replacing``: the temporary is ``.NAME.<machine>-<pid>-<random>.tmp``
beside the target, one per writer, hidden from globs over ``*.parquet``, and removed by a later
start once its writer is gone (``stale_temporary``). On an object store nothing renames: the
temporary is a local file, uploaded whole once complete (one PUT is atomic there), so a crash
while writing leaves nothing in the store.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .faults import disk_full, no_space
from .redaction import credentials_in, redact

LOCAL_PROTOCOLS = ("", "file", "local")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


TEMPORARY_GLOB = ".*.tmp"  # a local file being written: hidden, never a shard, swept when stale


def machine() -> str:
    """This process's machine as far as process ids go: the host name and the PID namespace
    (containers that share a host name but not their process ids are different machines)."""
    import socket

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def machine_tag() -> str:
    return hashlib.sha256(machine().encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_of(path: Path) -> Path:
    """A hidden temporary beside ``path`` named for this writer alone (machine, process id and a
    random part), so processes writing one file at once (ranks finishing together) never share one."""
    import uuid

    return path.with_name(f".{path.name}.{machine_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def stale_temporary(path: Path, max_age: float) -> bool:
    """Whether a local temporary was left by a writer that is gone: its process is not running on
    this machine, or it is older than ``max_age`` seconds (a writer elsewhere on a shared disk)."""
    import time

    parts = path.name[: -len(".tmp")].rsplit(".", 1)[-1].split("-")
    try:
        if len(parts) == 3 and parts[0] == machine_tag() and not process_alive(int(parts[1])):
            return True
        return time.time() - path.stat().st_mtime > max_age
    except (ValueError, FileNotFoundError):
        return False


def sweep_temporaries(top: list[Path], below: list[Path], max_age: float) -> None:
    """Remove the local temporaries left by writers that are gone (``stale_temporary``): those
    directly in the ``top`` folders and those anywhere under the ``below`` folders."""
    found = [p for f in top for p in f.glob(TEMPORARY_GLOB)]
    found += [p for f in below for p in f.rglob(TEMPORARY_GLOB)]
    for tmp in found:
        if stale_temporary(tmp, max_age):
            tmp.unlink(missing_ok=True)


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


class StorageError(ValueError):
    """A location that cannot be used as given; the message names it and says what to do."""


def is_url(path: str | os.PathLike) -> bool:
    return bool(_URL.match(str(path))) and not str(path).startswith("file://")


def check_url(path: str) -> None:
    """Refuse a URL with a password or key in it: credentials come from the environment."""
    found = credentials_in(str(path)) if is_url(path) else None
    if found:
        raise StorageError(
            f"{redact(path)}: credentials in a URL ({found}) would be written to the run's config and logs; "
            "give them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile), HF_TOKEN, ..."
        )


def location(path: str | os.PathLike) -> Path:
    """A ``Path`` for a local path (``file://`` included), a ``UPath`` for any other URL."""
    if is_remote(path):  # already a UPath
        return path
    text = os.fspath(path) if not isinstance(path, str) else path
    if text.startswith("file://"):
        return Path(urlsplit(text).path)
    if not is_url(text):
        return Path(text)
    check_url(text)
    from upath import UPath

    # no listing cache: other processes (the tasks on other nodes) write into the same folders
    options: dict[str, Any] = {"use_listings_cache": False}
    if text.startswith("hf://") and os.environ.get("HF_ENDPOINT"):
        # read at call time: huggingface_hub reads HF_ENDPOINT once, when it is imported
        options["endpoint"] = os.environ["HF_ENDPOINT"]
    return UPath(text, **options)


def is_remote(path: Any) -> bool:
    """True for a path on a filesystem other than the local one."""
    return getattr(path, "protocol", "") not in LOCAL_PROTOCOLS


def fs_path(path: Path) -> tuple[Any, str]:
    """(fsspec filesystem, the path as that filesystem names it) of a remote path."""
    return path.fs, path.path


def open_read(path: str | os.PathLike) -> BinaryIO:
    """A seekable binary file; remote reads fetch exactly the ranges asked for (no read-ahead)."""
    target = location(path)
    if not is_remote(target):
        return open(target, "rb")  # noqa: SIM115 - the caller closes it
    fs, name = fs_path(target)
    return fs.open(name, "rb", cache_type="none")


def read_bytes(path: str | os.PathLike) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file so that no reader sees half of it: one PUT remotely, temp + rename locally.

    Other processes may write the same path at once (the reply cache, ranks finishing
    together): each has its own temporary, and the last rename wins whole.
    """
    if is_remote(path):
        fs, name = fs_path(path)
        fs.pipe_file(name, data)
        return
    with replacing(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def replacing(path: Path):
    """The one write-to-a-temporary-then-rename of a local file or folder: yields this writer's own
    temporary beside ``path``, which replaces ``path`` when the block ends; on any failure the
    temporary is removed and an ``OSError`` becomes a ``WriteFailed`` naming ``path``."""
    import shutil

    tmp = temporary_of(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if disk_full(path):
            raise no_space(tmp)
        if tmp.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteFailed):
            raise WriteFailed.of(exc, path) from exc
        raise


class WriteFailed(OSError):
    """A whole-file write that failed (a full disk, a read-only folder): names the file it was writing.

    Nothing of it is visible: its temporary is removed (or was never renamed into place).
    """

    @classmethod
    def of(cls, exc: OSError, path) -> WriteFailed:
        return cls(exc.errno, exc.strerror or str(exc), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist; False if it does (one creator wins).

    Local files are written to a temporary and hard-linked into place (the link fails if the
    name exists), so a reader never sees the file empty or half written; S3 (and S3-compatible
    stores that honour it) takes a PUT with ``If-None-Match: *``. Other stores have no such
    write: there an existence check comes first, which two writers starting in the same
    instant can both pass (docs/running.md).
    """
    if not is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_of(path)
        try:
            tmp.write_bytes(data)
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            return _create_excl(path, data)  # a filesystem without hard links: exclusive, not whole
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True
    fs, name = fs_path(path)
    if path.protocol in ("s3", "s3a"):
        _check_conditional_put()
        try:
            fs.pipe_file(name, data, mode="create")
        except FileExistsError:
            return False
        return True
    if fs.exists(name):
        return False
    fs.pipe_file(name, data)
    return True


S3FS_CONDITIONAL_PUT = (2025, 7)  # s3fs sends If-None-Match for small objects from this release on


def _check_conditional_put() -> None:
    """Refuse an s3fs too old to create an object only if it is absent (two writers could both win)."""
    import s3fs

    found = tuple(int(part) for part in s3fs.__version__.split(".")[:2] if part.isdigit())
    if found < S3FS_CONDITIONAL_PUT:
        wanted = ".".join(map(str, S3FS_CONDITIONAL_PUT))
        raise StorageError(
            f"s3fs {s3fs.__version__} cannot create an object only if it is absent, which a task's lease "
            f"needs on S3: install s3fs>={wanted} (pip install -U s3fs)"
        )


def _create_excl(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def list_names(folder: Path) -> list[str]:
    """The names of the files directly in ``folder`` (one listing request remotely); [] if it is absent."""
    try:
        if not is_remote(folder):
            return os.listdir(folder)
        fs, name = fs_path(folder)
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(name, detail=False, refresh=True)]
    except FileNotFoundError:
        return []


def clock(folder: Path) -> float:
    """The time now on the clock of the store that holds ``folder``: a probe file written there
    and its modification time read back (so ages of files in it never compare two machines' clocks)."""
    import uuid

    probe = folder / f".clock-{uuid.uuid4().hex[:12]}"
    if not is_remote(folder):
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)
    fs, name = fs_path(probe)
    fs.pipe_file(name, b"")
    try:
        return fs.modified(name).timestamp()
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(name)


def list_files(url: str) -> list[tuple[str, int]]:
    """(URL, size) of the file at ``url``, or of every file under it in name order, hidden ones left out.

    One listing request per folder level; raises ``FileNotFoundError`` when nothing is there.
    """
    target = location(url)
    fs, name = fs_path(target)
    info = fs.info(name)
    if info["type"] != "directory":
        return [(url.rstrip("/"), int(info.get("size") or 0))]
    base = name.rstrip("/")
    found = []
    for path, detail in sorted(fs.find(name, detail=True).items()):
        relative = path[len(base) + 1 :] if path.startswith(base + "/") else path
        if detail.get("type") == "directory" or any(p.startswith(".") for p in relative.split("/")):
            continue
        found.append((f"{url.rstrip('/')}/{relative}", int(detail.get("size") or 0)))
    return found


def remove(path: Path) -> None:
    """Delete a file or a whole folder; nothing if it is not there."""
    if is_remote(path):
        fs, name = fs_path(path)
        with contextlib.suppress(FileNotFoundError):
            fs.rm(name, recursive=True)
        return
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)  # another process may be removing it too
    else:
        path.unlink(missing_ok=True)


def modified(path: Path) -> float:
    """Seconds since the epoch of the file's last write."""
    if not is_remote(path):
        return path.stat().st_mtime
    fs, name = fs_path(path)
    stamp = fs.modified(name)
    return stamp.timestamp()


def size(path: str | os.PathLike) -> int:
    """A file's size in bytes, from its metadata."""
    target = location(path)
    if not is_remote(target):
        return target.stat().st_size
    fs, name = fs_path(target)
    return int(fs.size(name) or 0)


def identity(path: Path) -> dict[str, Any]:
    """What pins a file's content without reading it: size and modification time, or an ETag."""
    if not is_remote(path):
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    fs, name = fs_path(path)
    info = fs.info(name)
    found = {"size": int(info.get("size") or 0)}
    # S3 and GCS name it ETag / etag; the Hub gives an LFS file's sha256, else its git blob id
    tag = info.get("ETag") or info.get("etag") or (info.get("lfs") or {}).get("sha256") or info.get("blob_id")
    if tag:
        found["etag"] = str(tag).strip('"')
    else:
        with contextlib.suppress(Exception):
            found["mtime"] = fs.modified(name).isoformat()
    return found


def parquet_file(path: Path):
    """A ``pyarrow.parquet.ParquetFile`` over a local path or a remote object."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.ParquetFile(path)
    return pq.ParquetFile(open_read(path))


def read_table(path: Path, columns: list[str] | None = None):
    """A whole Parquet file (a shard: one chunk's rows) as a table."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(path, columns=columns)
    with open_read(path) as handle:
        return pq.read_table(handle, columns=columns)


def reason(exc: BaseException) -> str:
    """A store's error in a few words (class and message), with no credential in it."""
    text = redact(str(exc).strip() or type(exc).__name__)
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def local_home(url: str | os.PathLike, base: str | os.PathLike) -> Path:
    """A local folder under ``base`` standing for a remote one (its logs): named by the URL's hash."""
    text = redact(url)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text.split("://", 1)[-1]).strip("-")[-40:]
    return Path(base) / f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


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
