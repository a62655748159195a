"""Hugging Face datasets by contiguous shard: a block is ``Dataset.shard(count, index, contiguous=True)``.

A dataset saved with ``save_to_disk`` is memory-mapped Arrow, so a shard touches
only its own rows. A hub name is loaded with ``datasets.load_dataset`` (which
needs the hub or its cache), pinned to the commit the Hub serves when the run
starts: the commit is part of the input's identity in ``run.json``, so an
upstream update before a resume stops it as a changed file does, and every task
of the run loads that same commit.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from .base import Block, CorpusError, RawRow, Reader

log = logging.getLogger(__name__)


class HFReader(Reader):
    def __init__(self, source: str, split: str, block_bytes: int):
        self.source = str(source)
        self.split = split
        self.block_bytes = block_bytes
        self.shard_count: int | None = None  # set by the planner; None: from block_bytes

    @cached_property
    def dataset(self):
        import datasets

        if Path(self.source).is_dir():
            dataset = datasets.load_from_disk(self.source)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[self.split]
            return dataset
        try:
            return datasets.load_dataset(self.source, split=self.split, revision=self.revision)
        except Exception as exc:  # the hub may be unreachable; say what was tried
            raise CorpusError(f"{self.source}: could not load as a Hugging Face dataset ({exc})") from exc

    @cached_property
    def revision(self) -> str | None:
        """The commit of a Hub dataset as the Hub serves it now (None for a saved dataset, or offline)."""
        if Path(self.source).is_dir():
            return None
        try:
            from huggingface_hub import HfApi

            return HfApi(endpoint=os.environ.get("HF_ENDPOINT")).dataset_info(self.source).sha
        except Exception as exc:  # offline, or a hub that does not say
            log.warning(
                "%s: the Hub did not say which commit it serves (%s): pinned by name only", self.source, exc
            )
            return None

    def identity(self) -> dict:
        if Path(self.source).is_dir():
            return super().identity()
        return {"source": self.source, "split": self.split, "revision": self.revision}

    def size(self) -> int:
        return int(self.dataset.data.nbytes)

    def blocks(self) -> list[Block]:
        rows = len(self.dataset)
        count = self.shard_count or -(-self.size() // self.block_bytes)
        count = max(1, min(count, rows))
        return [Block(self.source, index, count, self.size() // count) for index in range(count)]

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        shard = self.dataset.shard(num_shards=block.end, index=block.start, contiguous=True)
        counts["bytes_read"] += int(shard.data.nbytes)  # memory-mapped: the bytes this shard spans
        # contiguous shards: the first len(dataset) % count shards hold one row more
        rows, count = len(self.dataset), block.end
        first = block.start * (rows // count) + min(block.start, rows % count)
        for number, row in enumerate(shard, start=first + 1):
            yield f"{self.source}:row {number}", row
