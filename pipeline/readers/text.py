"""Plain-text files: a block is one ``.txt`` file, read whole as one document.

A file given on its own must be UTF-8 text. In a corpus folder, a ``.txt`` file that is binary
(a NUL byte in its first 8 KiB) is skipped and counted as ``skipped_binary_file``: folders
gathered from many places hold such files, and one must not stop the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .base import Block, CorpusError, RawRow, Reader


class TextReader(Reader):
    def __init__(self, path: str, root: str, skip_binary: bool = False):
        self.source = str(path)
        self.root = root  # document ids are paths relative to the corpus folder
        self.skip_binary = skip_binary

    def size(self) -> int:
        return Path(self.source).stat().st_size

    def blocks(self) -> list[Block]:
        return [Block(self.source, size=self.size())]

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        path = Path(self.source)
        data = path.read_bytes()
        counts["bytes_read"] += len(data)
        if b"\x00" in data[:8192]:
            if self.skip_binary:
                counts["skipped_binary_file"] += 1
                return
            raise CorpusError(f"{path}: a binary file, not UTF-8 text")
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is not part of the text
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
        yield str(path), {"id": str(path.relative_to(self.root)), "text": text, "title": path.stem}
