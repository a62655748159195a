"""The seeds of a domain run: ``domains.count`` numbered rows dealt to the domains in turn.

A domain run reads no corpus; its "documents" are seeds the ``domain`` steps write from
(``pipeline/generate/domain.py``). They come in blocks of ``SEEDS_PER_BLOCK`` so the tasks of
a run share them like the blocks of a file, and a seed's id (``legal-000007``) depends only on
its number, so a resumed or re-split run writes the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .base import Block, RawRow, Reader

SEEDS_PER_BLOCK = 64


class DomainSeeds(Reader):
    def __init__(self, names: list[str], count: int):
        self.names = list(names)
        self.count = count
        self.source = "domains:" + ",".join(self.names)

    def size(self) -> int:
        return self.count

    def blocks(self) -> list[Block]:
        return [
            Block(self.source, start, min(start + SEEDS_PER_BLOCK, self.count), size=SEEDS_PER_BLOCK)
            for start in range(0, self.count, SEEDS_PER_BLOCK)
        ]

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        for number in range(block.start, block.end):
            domain = self.names[number % len(self.names)]
            yield (
                f"seed {number}",
                {"id": f"{domain}-{number:06d}", "text": domain, "kind": "seed", "domain": domain},
            )

    def identity(self) -> dict:
        return {"source": self.source, "count": self.count}
