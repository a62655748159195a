"""Plain-text files: a block is one ``.txt`` file, read whole as one document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .base import Block, CorpusError, RawRow, Reader


class TextReader(Reader):
    def __init__(self, path: str, root: str):
        self.source = str(path)
        self.root = root  # document ids are paths relative to the corpus folder

    def size(self) -> int:
        return Path(self.source).stat().st_size

    def blocks(self) -> list[Block]:
        return [Block(self.source, size=self.size())]

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        path = Path(self.source)
        data = path.read_bytes()
        counts["bytes_read"] += len(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
        yield str(path), {"id": str(path.relative_to(self.root)), "text": text, "title": path.stem}
