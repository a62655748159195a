"""TSV and CSV corpora, plain or compressed: MS MARCO's ``collection.tsv``, BEIR's ``corpus.tsv``.

The first line is a header when it names a known column (``id``/``_id``/``docid``, ``text``,
``title``, or the configured ``corpus.*_field``); without one, two columns are read as
``id, text`` (MS MARCO's passages) and three as ``id, text, title``; more need a header.

TSV has no quoting (a tab or newline cannot sit inside a field), so a plain ``.tsv`` file is cut
into byte ranges like JSON Lines and spread over the tasks; every task reads the header from the
file's first line. A CSV field may hold a quoted newline, so a ``.csv`` file is one block, read
by one task; so is every compressed file (``pipeline/readers/compressed.py``). CSV is parsed
strictly: a quote that is never closed (which would swallow every row after it into one
field) or a character after a closing quote stops the run, naming the line the record starts on.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from functools import cached_property

from .. import storage
from .base import ID_FIELDS, TEXT_FIELDS, TITLE_FIELDS, Block, CorpusError, CountingFile, RawRow, Reader
from .compressed import numbered_lines, open_decompressed
from .jsonl import _LARGE, _REMOTE, LineAt, _lines, byte_blocks

HEADERLESS = {2: ["id", "text"], 3: ["id", "text", "title"]}


def column_names(first: list[str], where: str, known: set[str]) -> tuple[list[str], bool]:
    """(column names, whether the first line is a header) from the file's first line."""
    names = [name.strip().lstrip("\ufeff") for name in first]
    if any(name.lower() in known or name in known for name in names):
        return names, True
    if len(first) in HEADERLESS:
        return HEADERLESS[len(first)], False
    raise CorpusError(
        f"{where}: {len(first)} columns and no header line naming them: add a first line such as "
        "`id<TAB>text<TAB>title` (two columns are read as id, text; three as id, text, title)"
    )


class DelimitedReader(Reader):
    """One TSV or CSV file; ``compression`` (``.gz``, ...) makes it one block."""

    def __init__(
        self,
        path: str,
        delimiter: str,
        block_bytes: int,
        known: set[str],
        compression: str | None = None,
        size: int | None = None,
    ):
        self.source = str(path)
        self.delimiter = delimiter
        self.block_bytes = block_bytes
        self.compression = compression
        self.known = {*ID_FIELDS, *TEXT_FIELDS, *TITLE_FIELDS, *known}
        self._size = size

    @property
    def splittable(self) -> bool:
        return self.delimiter == "\t" and self.compression is None

    def size(self) -> int:
        if self._size is None:
            self._size = storage.size(self.source)
        return self._size

    def blocks(self) -> list[Block]:
        if self.splittable:
            return byte_blocks(self.source, self.size(), self.block_bytes)
        return [Block(self.source, size=self.size())]

    @cached_property
    def _columns(self) -> tuple[list[str], bool]:
        """The file's column names and whether line 1 is a header (one small read of the first line)."""
        first = next(self._records(Counter(), limit=1), None)  # streamed: stops after one line
        if first is None:
            return HEADERLESS[2], False
        return column_names(first[1], f"{self.source}:1", self.known)

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        names, header = self._columns
        records = self._tsv_range(block, counts) if self.splittable else self._records(counts)
        for where, fields, first in records:
            if header and first:
                continue
            if not any(field.strip() for field in fields):
                counts["skipped_blank_line"] += 1
                continue
            if len(fields) != len(names):
                raise CorpusError(
                    f"{where}: {len(fields)} field(s), the file has {len(names)} columns ({', '.join(names)})"
                )
            yield where, dict(zip(names, fields, strict=True))

    def _tsv_range(self, block: Block, counts: Counter) -> Iterator[tuple[object, list[str], bool]]:
        with CountingFile(self.source, counts) as handle:
            piece = _REMOTE if storage.is_url(self.source) else _LARGE
            for offset, line in _lines(handle, block.start, block.end, piece):
                where = LineAt(self.source, offset)  # its line number is counted only for a message
                yield where, _tsv_fields(line, where), offset == 0

    def _records(self, counts: Counter, limit: int | None = None) -> Iterator[tuple[str, list[str], bool]]:
        """(``file:line``, fields, whether it is line 1) of the whole file, from the start."""
        if self.delimiter == "\t":
            lines = (
                numbered_lines(self.source, self.compression, counts)
                if self.compression
                else _plain_lines(self.source, counts)
            )
            for count, (number, line) in enumerate(lines):
                if limit is not None and count >= limit:
                    return
                where = f"{self.source}:{number}"
                yield where, _tsv_fields(line, where), number == 1
            return
        yield from self._csv_records(counts, limit)

    def _csv_records(self, counts: Counter, limit: int | None) -> Iterator[tuple[str, list[str], bool]]:
        stream = (
            open_decompressed(self.source, self.compression, counts)
            if self.compression
            else CountingFile(self.source, counts)
        )
        physical = 0  # lines handed to the CSV parser so far (a quoted field may span several)

        def decoded() -> Iterator[str]:
            nonlocal physical
            for physical, raw in enumerate(io.BufferedReader(stream, 1 << 20), start=1):  # noqa: B007
                try:
                    yield raw.decode("utf-8-sig" if physical == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    where = f"{self.source}:{physical}"
                    raise CorpusError(f"{where}: not valid UTF-8 (byte {exc.start})") from None

        with stream:
            reader = csv.reader(decoded(), delimiter=self.delimiter, strict=True)
            ended = 0
            try:
                ended = 0  # the last line of the record before
                for count, fields in enumerate(reader):
                    if limit is not None and count >= limit:
                        return
                    yield f"{self.source}:{ended + 1}", fields, count == 0
                    ended = physical
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    raise CorpusError(
                        f"{self.source}:{ended + 1}: a quoted field opened on this line is never closed "
                        f'(the file ends at line {physical}): close the quote or escape it as ""'
                    ) from None
                raise CorpusError(f"{self.source}:{physical}: not valid CSV ({exc})") from None
            except EOFError as exc:
                raise CorpusError(
                    f"{self.source}: the compressed file is cut short after line {physical} ({exc})"
                ) from None


def _plain_lines(path: str, counts: Counter) -> Iterator[tuple[int, bytes]]:
    with CountingFile(path, counts) as handle:
        yield from enumerate(io.BufferedReader(handle, buffer_size=1 << 20), start=1)


def _tsv_fields(line: bytes, where: object) -> list[str]:
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
    return text.rstrip("\r\n").split("\t")
