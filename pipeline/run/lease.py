"""One writer per task: a lease whose every write is conditional, so a stalled writer is fenced out.

A task's lease is a series of small files in the task's folder, ``lease-VVVVVVVVVV.json``, one
per version. Every write of the lease (taking it, each heartbeat, taking it over, releasing it)
creates the *next* version if absent (``storage.create_exclusive``: a hard link locally,
S3's ``If-None-Match: *``), so of two writers that read version V and both write, exactly one
creates V+1; the other learns it has lost. The version a writer holds is also its fencing
token: the task's commits are named by it (``TaskState.save``), a new owner's first act is to
commit again under its own, higher version, and a reader takes the commit of the highest
version. A writer that stalled past the lease time (a long pause, a heartbeat stuck in
retries) and then commits writes under a version that no longer counts, and its next
``confirm`` tells it to leave the task.

Staleness is measured on one clock: the store's. The age of the newest version is the time
a probe file written now carries minus the time the version was written, both stamped by the
same filesystem or object store; no two machines' clocks are compared. A lease whose process
is gone from this machine (the same host and PID namespace) is stale at once. The owner is a
random token; host and process id are only for messages.

Stores without a conditional create (``hf://``, and others where fsspec has none) cannot fence:
``fences`` says which do, and the plan refuses more than one writer per task on the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .. import storage

log = logging.getLogger(__name__)

LEASE_SECONDS = 300  # a lease whose newest version is older than this (on the store's clock) is stale
LEASE_WAIT = 30  # how long a second writer waits for a live lease before it stops
KEEP_VERSIONS = 3  # older versions are removed by their owner; the newest few stay for readers
PREFIX, SUFFIX = "lease-", ".json"


class LeaseHeld(RuntimeError):
    """Another live writer holds the task."""


class LeaseLost(RuntimeError):
    """This writer's lease was taken over (it stalled past the lease time): it must leave the task."""


def fences(folder: Path) -> bool:
    """Whether leases in ``folder`` are fenced: its store creates a file only if absent, atomically."""
    return not storage.is_remote(folder) or folder.protocol in ("s3", "s3a")


def version_path(folder: Path, version: int) -> Path:
    return folder / f"{PREFIX}{version:010d}{SUFFIX}"


def versions(folder: Path) -> list[int]:
    """The lease versions present in ``folder``, oldest first."""
    found = []
    for name in storage.list_names(folder):
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            with contextlib.suppress(ValueError):
                found.append(int(name[len(PREFIX) : -len(SUFFIX)]))
    return sorted(found)


def newest(folder: Path) -> tuple[int, dict | None]:
    """(newest version, its record) of the lease in ``folder``; (0, None) when it has none.

    A record that does not parse is returned as ``{}`` (no owner: free to take).
    """
    for _ in range(5):  # a version listed may be removed by its owner before it is read: list again
        found = versions(folder)
        if not found:
            return 0, None
        try:
            return found[-1], json.loads(storage.read_bytes(version_path(folder, found[-1])))
        except FileNotFoundError:
            continue
        except ValueError:
            return found[-1], {}
    return 0, None


class Lease:
    """The one-writer lease of a task (``with state.lease(): ...``); see the module docstring."""

    def __init__(self, folder: Path, name: str, wait: float | None = None):
        self.folder = folder
        self.name = name
        self.wait = float(os.environ.get("SYNTH_LEASE_WAIT", LEASE_WAIT)) if wait is None else wait
        self.owner = uuid.uuid4().hex  # the random token that says whose a version is
        self.attempt = self.owner[:8]  # in the names of the shards this writer writes
        self.version = 0  # the newest version this writer created; 0 before it holds the lease
        self.lost = False
        self._lock = threading.Lock()  # the heartbeat and the task's own writes, one at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def seconds() -> float:
        return float(os.environ.get("SYNTH_LEASE_SECONDS", LEASE_SECONDS))

    # -- the versions --------------------------------------------------------------
    def _record(self, state: str) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "state": state,
                "host": socket.gethostname(),
                "machine": storage.machine(),
                "pid": os.getpid(),
            }
        ).encode()

    def _create(self, version: int, state: str) -> bool:
        """Create ``version`` if no writer did; True when this writer now holds it."""
        path = version_path(self.folder, version)
        if not storage.create_exclusive(path, self._record(state)):
            return False
        if versions(self.folder)[-1:] != [version]:  # a stray low version (read from a stale listing)
            storage.remove(path)
            return False
        return True

    def _stale(self, version: int, held: dict) -> bool:
        if held.get("machine") == storage.machine() and not storage.process_alive(int(held.get("pid", 0))):
            return True  # its process is gone from this machine (a crash, a SIGKILL)
        return self.age(version) > self.seconds()

    def age(self, version: int) -> float:
        """Seconds since ``version`` was written, on the store's own clock."""
        try:
            return storage.clock(self.folder) - storage.modified(version_path(self.folder, version))
        except FileNotFoundError:
            return 0.0  # replaced meanwhile: the lease is alive

    def _tidy(self) -> None:
        """Remove this task's lease versions older than the newest few (the owner's own housekeeping)."""
        for old in versions(self.folder)[:-KEEP_VERSIONS]:
            storage.remove(version_path(self.folder, old))

    # -- a writer's life -------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease: at once when it is free, released or stale; a live one held by another
        writer is waited for up to ``SYNTH_LEASE_WAIT`` seconds (default 30), then refused."""
        give_up = time.time() + self.wait
        while True:
            version, held = newest(self.folder)
            free = held is None or held.get("state") != "held" or not held.get("owner")
            if free or self._stale(version, held):
                if self._create(version + 1, "held"):
                    self.version = version + 1
                    if version and not free:
                        log.info("%s: took over a stale lease (version %d)", self.name, version)
                    break
                continue  # another writer created that version first: look again
            if time.time() >= give_up:
                raise LeaseHeld(
                    f"{self.name} is being written by process {held.get('pid')} on {held.get('host')} "
                    f"(lease renewed {self.age(version):.0f} s ago): two writers would duplicate rows. Wait "
                    f"for it to finish, or stop it; a dead writer's lease expires {self.seconds():.0f} s "
                    "after its last renewal"
                )
            time.sleep(min(1.0, max(0.0, give_up - time.time())))
        self._tidy()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds() / 3):
            with self._lock:
                if self.lost:
                    return
                try:
                    renewed = self._create(self.version + 1, "held")
                except OSError as exc:  # the store failed to answer: try again at the next beat
                    log.warning("%s: lease renewal failed: %s", self.name, storage.reason(exc))
                    continue
                if not renewed:
                    self.lost = True  # another writer took the task over after this one stalled
                    return
                self.version += 1
            with contextlib.suppress(OSError):
                self._tidy()

    def confirm(self) -> int:
        """Before a write: the version this writer holds (its fencing token), or ``LeaseLost``."""
        with self._lock:
            if not self.lost:
                version, held = newest(self.folder)
                self.lost = version != self.version or (held or {}).get("owner") != self.owner
            if self.lost:
                raise LeaseLost(f"{self.name}: another writer took this task over; this one leaves it")
            return self.version

    def release(self) -> None:
        """Write a released version (if this writer still holds the lease) and stop the heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.lost or not self.version:
                return
            with contextlib.suppress(OSError):
                if self._create(self.version + 1, "released"):
                    self.version += 1
                    self._tidy()

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
