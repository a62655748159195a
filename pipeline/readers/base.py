"""What every corpus reader shares: blocks, byte counting, ``read(rank, world_size)``.

A reader cuts its input into *blocks* from metadata alone (file sizes, Parquet
footers, dataset lengths), so planning a run reads no text. A task owns whole
blocks and reads only those: every byte of the corpus is read by one task, once,
however many tasks share it. Every reader counts what it reads under
``bytes_read`` in the counter it is given.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import storage

# the columns a corpus row may name its id, text and title with (``corpus.*_field`` overrides them)
ID_FIELDS = ("id", "_id", "doc_id", "docid")
TEXT_FIELDS = ("text", "content", "contents", "passage", "body")
TITLE_FIELDS = ("title",)

RawRow = tuple[Any, dict[str, Any]]  # (where: formats as "file:line" / "file:row N", the row)


class CorpusError(ValueError):
    """A corpus row that cannot be read; the message names file, row and field."""


@dataclass(frozen=True)
class Block:
    """One unit of input a task owns: a byte range, a row group, a file, or a dataset shard."""

    source: str
    start: int = 0  # byte offset (JSONL), row group (Parquet), shard index (dataset)
    end: int = 0  # byte end (JSONL), shard count (dataset); unused otherwise
    size: int = field(default=0, compare=False)  # bytes, as the metadata tells: balances the tasks

    def __str__(self) -> str:
        return f"{self.source}[{self.start}:{self.end}]" if self.end else f"{self.source}[{self.start}]"


class Reader(ABC):
    """One input source (a file, or a saved dataset) and the blocks it is cut into."""

    source: str

    @abstractmethod
    def blocks(self) -> list[Block]:
        """The source's blocks in reading order, from metadata only."""

    @abstractmethod
    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        """The rows of one block, counting the bytes read in ``counts["bytes_read"]``."""

    def identity(self) -> dict[str, Any]:
        """What pins this input: its path, size and modification time or ETag (a hub dataset: its name).

        A rerun compares it with the one recorded when the run started, so an edited corpus
        is never silently split into other blocks than the finished chunks were read from.
        """
        path = storage.location(self.source)
        if storage.is_remote(path) or path.is_file():
            return {"source": self.source, **storage.identity(path)}
        if path.is_dir():  # a saved dataset: its files
            files = sorted(p for p in path.rglob("*") if p.is_file())
            stats = [p.stat() for p in files]
            return {
                "source": self.source,
                "size": sum(s.st_size for s in stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            }
        return {"source": self.source}

    def read(self, rank: int = 0, world_size: int = 1, counts: Counter | None = None) -> Iterator[RawRow]:
        """The rows of this reader's blocks ``rank, rank + world_size, ...`` (one source alone, for tools
        and tests); a run deals every source's blocks to its tasks by size instead (``Corpus``)."""
        counts = Counter() if counts is None else counts
        for block in self.blocks()[rank::world_size]:
            yield from self.rows(block, counts)


class WholeFileReader(Reader):
    """A reader whose file is one block, read whole (text files, source files, doc files)."""

    def __init__(self, path: str, size: int | None = None):
        self.source = str(path)
        self._size = size

    def size(self) -> int:
        if self._size is None:
            self._size = storage.size(self.source)
        return self._size

    def blocks(self) -> list[Block]:
        return [Block(self.source, size=self.size())]


class CountingFile(io.RawIOBase):
    """A binary file (local or remote) that adds every byte it hands out to ``counts["bytes_read"]``.

    Remote files are opened without read-ahead, so what is counted is what was fetched.
    """

    def __init__(self, path: str, counts: Counter):
        self._file = storage.open_read(path)
        self._counts = counts

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(buffer)
        self._counts["bytes_read"] += n or 0
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._counts["bytes_read"] += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


class SkipCounts(Reader):
    """What listing a corpus skipped (a source tree's vendored folders, a folder's files of unknown
    types): no rows, one block, and the counts added once, by the task that owns that block."""

    def __init__(self, source: str, counts: Counter):
        self.source = f"{source}#skipped"
        self.counts = counts

    def size(self) -> int:
        return 0

    def blocks(self) -> list[Block]:
        return [Block(self.source)] if self.counts else []

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        counts.update(self.counts)
        return iter(())

    def identity(self) -> dict:
        return {"source": self.source, "skipped": dict(sorted(self.counts.items()))}
