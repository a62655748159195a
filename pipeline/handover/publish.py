"""``synth publish``: a finished run to a Hugging Face dataset repo, in one commit.

Uploaded: every shard of ``data/`` (one folder per task type, as the card's configs expect),
the dataset card ``README.md`` and ``stats.json``; ``rejected/`` only when asked. The run
must be complete and its shards must match its manifest (``finished.py``). The token is
whatever ``huggingface_hub`` finds (``HF_TOKEN``, else the stored login); this module never
prints, logs or writes it. ``HF_ENDPOINT`` points the upload at another server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..run.finished import finished_run
from ..run.folder import RunFolder

log = logging.getLogger(__name__)


class PublishError(Exception):
    """The upload could not be made: the message says why, without the token."""


@dataclass
class Published:
    repo_url: str
    commit_url: str
    files: list[str]


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
    private: bool = False,
    revision: str | None = None,
    include_rejected: bool = False,
) -> Published:
    folder = RunFolder(out)
    files = files_to_publish(out, include_rejected)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        with _local_copies(folder, files) as local:
            repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
            operations = [
                CommitOperationAdd(path_in_repo=path, path_or_fileobj=local[path]) for path in files
            ]
            commit = api.create_commit(
                repo_id,
                operations,
                commit_message=f"Add {folder.name}: {len(files)} files from synth",
                repo_type="dataset",
                revision=revision,
            )
    except OfflineModeIsEnabled:
        raise PublishError(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it in this shell to publish"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no"
        hint = " (check HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
        raise PublishError(f"the Hub answered {status} for {repo_id}{hint}: {_first_line(exc)}") from None
    except OSError as exc:  # no route, refused connection, DNS: httpx's errors are not all OSErrors
        raise PublishError(f"cannot reach the Hub at {api.endpoint}: {_first_line(exc)}") from None
    return Published(repo_url=str(repo_url), commit_url=commit.commit_url, files=files)


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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
