"""A ``.json`` file holding one array of objects (``[{"id": ..., "text": ...}, ...]``).

The array is one block, read by one task, and parsed one element at a time from a streamed
buffer, so memory holds about one element and a read-ahead piece, never the file. Messages
name the line an element starts on. (A ``.json`` file whose first character is not ``[`` is
read as JSON Lines.) Anything but whitespace after the closing ``]`` (a second array, a stray
object) stops the run with its line: it would otherwise be rows nobody reads.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator

from .base import CorpusError, CountingFile, RawRow, WholeFileReader
from .compressed import open_decompressed

PIECE = 1 << 20  # characters read at a time
WHITESPACE = " \t\r\n"


def starts_with_array(path: str, compression: str | None) -> bool:
    """Whether the file's first character that is not whitespace (or a byte-order mark) is ``[``."""
    counts: Counter = Counter()
    stream = open_decompressed(path, compression, counts) if compression else CountingFile(path, counts)
    with stream:
        head = stream.read(4096)
    return head.decode("utf-8-sig", errors="replace").lstrip(WHITESPACE).startswith("[")


class JsonArrayReader(WholeFileReader):
    def __init__(self, path: str, size: int | None = None, compression: str | None = None):
        super().__init__(path, size)
        self.compression = compression

    def rows(self, block, counts: Counter) -> Iterator[RawRow]:
        raw = open_decompressed(self.source, self.compression, counts) if self.compression else None
        with raw or CountingFile(self.source, counts) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8-sig")
            try:
                yield from self._elements(text)
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{self.source}: not valid UTF-8 (byte {exc.start})") from None

    def _elements(self, text: io.TextIOBase) -> Iterator[RawRow]:
        scan = _Scanner(text, self.source)
        scan.skip_space()
        if scan.peek() != "[":
            raise CorpusError(f"{scan.where}: expected a JSON array of objects")
        scan.at += 1
        index = 0
        while True:
            if scan.closing(may_close=index == 0):  # `[]`, never `[{...},]`
                return
            where, value = scan.where, scan.element(index)
            if not isinstance(value, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(value).__name__}")
            yield where, value
            index += 1
            if scan.closing(may_close=True):
                return
            if scan.peek() != ",":
                raise CorpusError(f"{scan.where}: expected ',' or ']' after element {index}")
            scan.at += 1


class _Scanner:
    """A cursor over a text stream read a piece at a time: ``buffer[at]`` is on line ``line``."""

    def __init__(self, text: io.TextIOBase, source: str):
        self.text, self.source = text, source
        self.buffer, self.at, self.line, self.done = "", 0, 1, False
        self.decoder = json.JSONDecoder()

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def more(self, wanted: int = PIECE) -> bool:
        piece = self.text.read(wanted)
        if not piece:
            self.done = True
            return False
        self.buffer, self.at = self.buffer[self.at :] + piece, 0
        return True

    def peek(self) -> str:
        return self.buffer[self.at] if self.at < len(self.buffer) else ""

    def skip_space(self) -> None:
        while True:
            while self.at < len(self.buffer) and self.buffer[self.at] in WHITESPACE:
                self.line += self.buffer[self.at] == "\n"
                self.at += 1
            if self.at < len(self.buffer) or not self.more():
                return

    def closing(self, may_close: bool) -> bool:
        """Past whitespace: whether the array ends here (``]``, then nothing but whitespace).

        The end of the file before ``]`` means the file was cut short. Where an element must
        follow (``may_close`` false), a ``]`` is left for the element's parse to refuse."""
        self.skip_space()
        if self.at >= len(self.buffer):
            raise CorpusError(f"{self.where}: the array is not closed (is the file cut short?)")
        if not may_close or self.buffer[self.at] != "]":
            return False
        self.at += 1
        self.skip_space()
        if self.at < len(self.buffer):
            after = self.buffer[self.at : self.at + 20]
            raise CorpusError(
                f"{self.where}: data after the end of the JSON array ({after!r}...): "
                "a .json file holds one array; write several arrays as several files, or use JSON Lines"
            )
        return True

    def element(self, index: int) -> object:
        """The JSON value starting here, reading further ahead (twice as far each time) until it parses."""
        wanted = PIECE
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.at)
                break
            except json.JSONDecodeError as exc:
                if self.done or not self.more(wanted):
                    message = f"element {index + 1} is not valid JSON ({exc.msg})"
                    raise CorpusError(f"{self.where}: {message}") from None
                wanted *= 2  # a long element: read further ahead each time
        self.line += self.buffer.count("\n", self.at, end)
        self.at = end
        return value
