"""Parquet by row group: a block is one row group, read through the file's footer offsets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .. import storage
from .base import Block, CountingFile, RawRow, Reader


class ParquetReader(Reader):
    def __init__(self, path: str):
        self.source = str(path)

    def size(self) -> int:
        return storage.size(self.source)

    def _metadata(self):
        return storage.parquet_file(storage.location(self.source)).metadata

    def blocks(self) -> list[Block]:
        metadata = self._metadata()
        if metadata.num_row_groups == 0:
            return [Block(self.source, 0)]
        return [
            Block(self.source, group, size=metadata.row_group(group).total_byte_size)
            for group in range(metadata.num_row_groups)
        ]

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        import pyarrow.parquet as pq

        with CountingFile(self.source, counts) as handle:
            parquet = pq.ParquetFile(handle)
            if parquet.metadata.num_row_groups == 0:
                return
            # row numbers in messages are the file's, from the row counts in the footer
            number = sum(parquet.metadata.row_group(g).num_rows for g in range(block.start))
            for batch in parquet.iter_batches(batch_size=1024, row_groups=[block.start]):
                for row in batch.to_pylist():
                    number += 1
                    yield f"{self.source}:row {number}", row
