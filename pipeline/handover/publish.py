"""``synth publish``: a finished run to a Hugging Face dataset repo, in one commit.

Uploaded: every shard of ``data/`` (one folder per task type, as the card's configs expect),
the dataset card ``README.md`` and ``stats.json``; ``rejected/`` only when asked. The run
must be complete and its shards must match its manifest (``finished.py``). After the commit
the revision holds exactly this run's files: files an earlier publish left there that this
run does not have (another run's shards, which the card's ``data/<task>/*.parquet`` globs
would pick up) are deleted in the same commit, unless ``keep_existing``. ``private`` (True or
False) sets the visibility of a repo that already exists, or says why it cannot.

Transient faults (connection errors, 429 with its Retry-After, 5xx) are retried with backoff;
every other failure is one ``PublishError`` line with its cause. The token is whatever
``huggingface_hub`` finds (``HF_TOKEN``, else the stored login); this module never prints,
logs or writes it, and removes it from any message. ``HF_ENDPOINT`` points the upload at
another server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..run.finished import finished_run
from ..run.folder import RunFolder

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 5  # tries of each request on a transient fault
BASE_WAIT_S = 0.5  # first wait; doubled each time, with jitter, up to MAX_WAIT_S
MAX_WAIT_S = 20.0
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
KEPT_FILES = {".gitattributes"}  # repo files a publish never deletes


class PublishError(Exception):
    """The upload could not be made: the message says why, without the token."""


@dataclass
class Published:
    repo_url: str
    commit_url: str
    files: list[str]
    deleted: list[str] = field(default_factory=list)  # an earlier publish's files this one removed
    visibility: str | None = None  # "private" / "public" when this publish changed it


def files_to_publish(out: Path, include_rejected: bool) -> list[str]:
    """Paths relative to ``out``, in upload order."""
    manifest = finished_run(out)
    folder = RunFolder(out)
    files = [shard["path"] for shard in manifest["shards"]]
    for path in (folder.card_file, folder.stats_file):
        if not path.exists():
            raise PublishError(f"{path} is missing: rerun the same `synth generate` command to write it")
        files.append(folder.relative(path))
    if include_rejected:
        files += [folder.relative(p) for p in folder.rejected_shards()]
    return files


def publish(
    out: Path,
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    include_rejected: bool = False,
    keep_existing: bool = False,
) -> Published:
    """One commit making ``revision`` of ``repo_id`` hold this run's files (see the module's text)."""
    folder = RunFolder(out)
    files = files_to_publish(out, include_rejected)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    hub = _Hub(api, repo_id)
    with _local_copies(folder, files) as local:
        repo_url = hub.call(
            "create the repo",
            api.create_repo,
            repo_id,
            repo_type="dataset",
            private=bool(private),
            exist_ok=True,
        )
        visibility = hub.set_visibility(private)
        if revision and revision != "main":
            hub.call(
                "create the branch",
                api.create_branch,
                repo_id,
                branch=revision,
                repo_type="dataset",
                exist_ok=True,
            )
        stale = []
        if not keep_existing:
            present = hub.call(
                "list the repo's files", api.list_repo_files, repo_id, repo_type="dataset", revision=revision
            )
            stale = sorted(set(present) - set(files) - KEPT_FILES)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=local[path]) for path in files]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        summary = f"Add {folder.name}: {len(files)} files from synth"
        if stale:
            summary += f", {len(stale)} files of an earlier publish removed"
        commit = hub.call(
            "commit",
            api.create_commit,
            repo_id,
            operations,
            commit_message=summary,
            repo_type="dataset",
            revision=revision,
        )
    return Published(str(repo_url), commit.commit_url, files, deleted=stale, visibility=visibility)


class _Hub:
    """Calls to the Hub: transient faults retried, every other failure one ``PublishError`` line."""

    def __init__(self, api, repo_id: str):
        self.api = api
        self.repo_id = repo_id
        from huggingface_hub import get_token

        self._token = get_token() or ""

    def call(self, what: str, function: Callable[..., T], *args, **kwargs) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                wait = self._transient_wait(exc, attempt)
                if wait is None or attempt == ATTEMPTS:
                    raise self._error(what, exc, attempt) from None
                log.warning("Hub: %s failed (%s); retry %d in %.1f s", what, self._said(exc), attempt, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def set_visibility(self, private: bool | None) -> str | None:
        """Make an existing repo private or public as asked; None when nothing was changed."""
        if private is None:
            return None
        info = self.call("read the repo's settings", self.api.repo_info, self.repo_id, repo_type="dataset")
        if bool(getattr(info, "private", False)) == private:
            return None
        wanted = "private" if private else "public"
        try:
            self.call(
                f"make the repo {wanted}",
                self.api.update_repo_settings,
                self.repo_id,
                private=private,
                repo_type="dataset",
            )
        except PublishError as exc:
            raise PublishError(
                f"{exc} (the repo stays as it was; changing it needs admin rights on it)"
            ) from None
        return wanted

    @staticmethod
    def _transient_wait(exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None when the fault is not transient."""
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        if isinstance(exc, OfflineModeIsEnabled):
            return None
        if isinstance(exc, HfHubHTTPError):
            response = exc.response
            if response is None or response.status_code not in TRANSIENT_STATUS:
                return None
            after = response.headers.get("Retry-After", "")
            if after.strip().isdigit():
                return min(float(after), 60.0)
        elif not _kind_of(exc, "NetworkError", "TimeoutException", "RemoteProtocolError"):
            return None
        return min(MAX_WAIT_S, BASE_WAIT_S * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)

    def _said(self, exc: BaseException) -> str:
        from huggingface_hub.errors import HfHubHTTPError

        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if (
            isinstance(exc, HfHubHTTPError)
            and exc.response is not None
            and str(exc.response.status_code) not in text
        ):
            text = f"{exc.response.status_code}: {text}"
        if self._token:
            text = text.replace(self._token, "***")
        return text[:300]

    def _error(self, what: str, exc: BaseException, attempts: int) -> PublishError:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        tries = f" after {attempts} tries" if attempts > 1 else ""
        endpoint = self.api.endpoint
        if isinstance(exc, OfflineModeIsEnabled):
            return PublishError(
                "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it in this shell to publish"
            )
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "no"
            hint = " (check HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
            said = self._said(exc)
            return PublishError(f"could not {what} for {self.repo_id}{tries}{hint}: the Hub answered {said}")
        if isinstance(exc, ValueError) and "JSON" in type(exc).__name__ + str(exc):
            return PublishError(
                f"could not {what} for {self.repo_id}: the Hub at {endpoint} sent a reply that is not JSON"
            )
        if isinstance(exc, OSError) or _kind_of(exc, "TransportError"):
            return PublishError(
                f"could not {what} for {self.repo_id}: cannot reach the Hub at {endpoint}{tries} "
                f"({self._said(exc)})"
            )
        return PublishError(f"could not {what} for {self.repo_id}: {type(exc).__name__}: {self._said(exc)}")


@contextlib.contextmanager
def _local_copies(folder: RunFolder, files: list[str]) -> Iterator[dict[str, str]]:
    """Relative path -> a local file to upload: the file itself, or a copy of a remote one.

    A run on an object store is copied to a temporary folder one file at a time (disk, not
    memory, holds it) and the copies go when the commit is made.
    """
    if not folder.remote:
        yield {path: str(folder.resolve(path)) for path in files}
        return
    with tempfile.TemporaryDirectory(prefix="synth-publish-") as scratch:
        local = {}
        for path in files:
            target = Path(scratch) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            remote = folder.resolve(path)
            remote.fs.get_file(remote.path, str(target))
            local[path] = str(target)
        yield local


def _kind_of(exc: BaseException, *names: str) -> bool:
    """Whether ``exc`` is an HTTP client error of one of these kinds, by class name: huggingface_hub
    may bring its own copy of httpx (``httpx2``), whose classes are not ``httpx``'s."""
    return any(
        cls.__name__ in names and cls.__module__.split(".")[0].startswith("httpx")
        for cls in type(exc).__mro__
    )
