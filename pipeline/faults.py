"""Named crash points and injected disk faults, so the exactly-once promise can be tested at every
place a process may die or a write may fail.

``SYNTH_CRASH_AT=POINT`` (or ``POINT@N`` for its N-th time in this process) makes the process
exit at once, with status ``CRASH_EXIT`` and no clean-up, when it reaches that point: what a
power cut or a SIGKILL leaves behind, at a chosen moment instead of a random one. Unset (the
normal case) the check costs one dictionary look-up.

``SYNTH_DISK_FULL_AT=TEXT`` (or ``TEXT@N``) makes the first (N-th) whole-file write whose path
holds ``TEXT`` (``data/``, ``progress/``, ``stats.json``, ...) fail the way a full disk does:
half the bytes reach the temporary file, then ``ENOSPC``.
"""

from __future__ import annotations

import errno
import os
from collections import Counter

ENV = "SYNTH_CRASH_AT"
DISK_FULL_ENV = "SYNTH_DISK_FULL_AT"
CRASH_EXIT = 86
RUN_POINTS = (  # synth generate: each is in the crash matrix of tests/test_crash_points.py
    "after_replies",  # every reply of a chunk is back (kept in the cache or the journal), nothing written
    "before_shard",  # a chunk's rows are ready, its first shard not written
    "after_shard",  # one shard of the chunk landed, the others may not have
    "before_checkpoint",  # every shard of the chunk landed, the checkpoint not written
    "mid_checkpoint",  # the checkpoint's temporary file written, not renamed
    "after_checkpoint",  # the chunk is committed
    "before_complete",  # the task's last checkpoint written, its completion marker not
    "in_finalize",  # every task complete, stats written, the manifest not
    "mid_manifest",  # the manifest's temporary file written, not renamed
    "before_card",  # the manifest written, the dataset card not
)
TRAIN_POINTS = (  # synth train / train-reranker: tests/test_trainer.py resumes from it
    "after_train_checkpoint",  # a checkpoint saved, training not done
)
LOOP_POINTS = (  # synth loop: tests/test_loop.py reruns from each (the step's work done, its result file not)
    "loop_generate",
    "loop_split",
    "loop_train",
    "loop_eval",
)
POINTS = RUN_POINTS + TRAIN_POINTS + LOOP_POINTS
_reached: Counter = Counter()


def crash_point(name: str) -> None:
    """Exit the process here if ``SYNTH_CRASH_AT`` names this point (and this is its N-th time)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os._exit(CRASH_EXIT)


_writes: Counter = Counter()


def disk_full(path: object) -> bool:
    """Whether this write fails as on a full disk (``SYNTH_DISK_FULL_AT``); counts the writes it names."""
    wanted = os.environ.get(DISK_FULL_ENV)
    if not wanted:
        return False
    text, _, nth = wanted.partition("@")
    if text not in str(path):
        return False
    _writes[text] += 1
    return _writes[text] == int(nth or 1)


def no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
