"""Plain-text files: a block is one ``.txt`` file, read whole as one document.

A file given on its own must be UTF-8 text. In a corpus folder, a ``.txt`` file that is binary
(a NUL byte in its first 8 KiB) is skipped and counted as ``skipped_binary_file``: folders
gathered from many places hold such files, and one must not stop the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import storage
from .base import Block, CorpusError, RawRow, WholeFileReader


class TextReader(WholeFileReader):
    def __init__(self, path: str, root: str, skip_binary: bool = False, size: int | None = None):
        super().__init__(path, size)
        self.root = str(root)  # document ids are paths relative to the corpus folder
        self.skip_binary = skip_binary

    def _document_id(self) -> str:
        if storage.is_url(self.source):
            return self.source[len(self.root.rstrip("/")) + 1 :]
        return str(Path(self.source).relative_to(self.root))

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        path = self.source
        data = storage.read_bytes(path)
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
        title = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        yield path, {"id": self._document_id(), "text": text, "title": title}
