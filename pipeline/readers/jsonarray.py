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
        decoder = json.JSONDecoder()
        buffer, at, line, done = "", 0, 1, False  # line: the line number of buffer[at]

        def more(wanted: int = PIECE) -> bool:
            nonlocal buffer, at, done
            piece = text.read(wanted)
            if not piece:
                done = True
                return False
            buffer = buffer[at:] + piece
            at = 0
            return True

        def skip_space() -> None:
            nonlocal at, line
            while True:
                while at < len(buffer) and buffer[at] in WHITESPACE:
                    line += buffer[at] == "\n"
                    at += 1
                if at < len(buffer) or not more():
                    return

        skip_space()
        if at >= len(buffer) or buffer[at] != "[":
            raise CorpusError(f"{self.source}:{line}: expected a JSON array of objects")
        at += 1
        index = 0
        while True:
            skip_space()
            if at >= len(buffer):
                raise CorpusError(f"{self.source}:{line}: the array is not closed (is the file cut short?)")
            if buffer[at] == "]" and index == 0:
                at += 1
                skip_space()
                self._nothing_after(buffer, at, line)
                return
            wanted = PIECE
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, at)
                    break
                except json.JSONDecodeError as exc:
                    if done or not more(wanted):
                        raise CorpusError(
                            f"{self.source}:{line}: element {index + 1} is not valid JSON ({exc.msg})"
                        ) from None
                    wanted *= 2  # a long element: read further ahead each time
            where = f"{self.source}:{line}"
            if not isinstance(value, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(value).__name__}")
            line += buffer.count("\n", at, end)
            at = end
            yield where, value
            index += 1
            skip_space()
            if at >= len(buffer):
                raise CorpusError(f"{self.source}:{line}: the array is not closed (is the file cut short?)")
            if buffer[at] == "]":
                at += 1
                skip_space()
                self._nothing_after(buffer, at, line)
                return
            if buffer[at] != ",":
                raise CorpusError(f"{self.source}:{line}: expected ',' or ']' after element {index}")
            at += 1

    def _nothing_after(self, buffer: str, at: int, line: int) -> None:
        if at < len(buffer):
            raise CorpusError(
                f"{self.source}:{line}: data after the end of the JSON array ({buffer[at : at + 20]!r}...): "
                "a .json file holds one array; write several arrays as several files, or use JSON Lines"
            )
