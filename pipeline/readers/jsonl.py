"""JSON Lines by byte range: a block is every line that starts inside ``[start, end)``.

A task seeks to its range and reads only it (plus the tail of the one line that
crosses its end), the way Hadoop and Ray Data split text files. Line numbers
for error messages are counted only when a message needs one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from .. import storage
from ..jsonl import parse_line
from .base import Block, CorpusError, CountingFile, RawRow, Reader
from .compressed import numbered_lines


@dataclass(frozen=True)
class LineAt:
    """Where a row is: formats as ``file:line``, counting newlines before it only when formatted."""

    path: str
    offset: int

    def __str__(self) -> str:
        line = 1
        with storage.open_read(self.path) as handle:
            remaining = self.offset
            while remaining > 0:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                line += chunk.count(b"\n")
                remaining -= len(chunk)
        return f"{self.path}:{line}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def byte_blocks(source: str, size: int, block_bytes: int) -> list[Block]:
    """``[start, end)`` ranges of at most ``block_bytes`` covering a file of ``size`` bytes."""
    return [
        Block(source, start, min(start + block_bytes, size), min(block_bytes, size - start))
        for start in range(0, max(size, 1), block_bytes)
    ]


class JsonlReader(Reader):
    """One JSON Lines file; a compressed one (``compression``: ``.gz``, ...) is one block, streamed."""

    def __init__(self, path: str, block_bytes: int, size: int | None = None, compression: str | None = None):
        self.source = str(path)
        self.block_bytes = block_bytes
        self.compression = compression
        self._size = size  # known from a folder listing: no request per file

    @property
    def splittable(self) -> bool:
        return self.compression is None

    def size(self) -> int:
        if self._size is None:
            self._size = storage.size(self.source)
        return self._size

    def blocks(self) -> list[Block]:
        if not self.splittable:
            return [Block(self.source, size=self.size())]
        return byte_blocks(self.source, self.size(), self.block_bytes)

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        if self.compression:
            for number, line in numbered_lines(self.source, self.compression, counts):
                where = f"{self.source}:{number}"
                row = parse_line(line, where, CorpusError)
                if row is None:
                    counts["skipped_blank_line"] += 1
                else:
                    yield where, row
            return
        with CountingFile(self.source, counts) as handle:
            piece = _REMOTE if storage.is_url(self.source) else _LARGE
            for offset, line in _lines(handle, block.start, block.end, piece):
                where = LineAt(self.source, offset)
                row = parse_line(line, where, CorpusError)
                if row is None:
                    counts["skipped_blank_line"] += 1
                else:
                    yield where, row


_SMALL = 4096
_LARGE = 1 << 20  # a local read
# a range request costs a round trip, so remote pieces are larger; each one is held about five
# times over while it is cut into lines (the HTTP body, the joined buffer, the allocator's slack):
# 2 MiB keeps a 1 GB read within 1.2x of a 10 MB one's peak memory (bench/storage.py)
_REMOTE = 2 << 20


def _lines(handle: CountingFile, start: int, end: int, large: int = _LARGE) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every line starting in ``[start, end)``, reading little past ``end``."""
    if start > 0:
        # the line holding byte start-1 belongs to the block before (or ends exactly there)
        handle.seek(start - 1)
        base = start - 1
        while True:
            piece = handle.read(_SMALL)
            if not piece:
                return
            newline = piece.find(b"\n")
            if newline >= 0:
                buffer, buffer_start = piece[newline + 1 :], base + newline + 1
                break
            base += len(piece)
    else:
        buffer, buffer_start = b"", 0
    cursor = 0  # lines before it in buffer are handed out already
    while buffer_start + cursor < end:
        newline = buffer.find(b"\n", cursor)
        if newline < 0:
            # past the end only the crossing line is left to finish: read small pieces there
            ahead = end - (buffer_start + len(buffer))
            piece = handle.read(min(large, ahead) if ahead > _SMALL else _SMALL)
            if not piece:
                if cursor < len(buffer):
                    yield buffer_start + cursor, buffer[cursor:]
                return
            buffer_start += cursor
            rest, buffer = buffer[cursor:], b""  # let the old buffer go before the new one is built
            buffer, cursor = (rest + piece) if rest else piece, 0
            continue
        yield buffer_start + cursor, buffer[cursor : newline + 1]
        cursor = newline + 1
