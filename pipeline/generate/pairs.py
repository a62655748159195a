"""Step: the positive of a pair that names a corpus document (``--pairs``, ``readers/pairs.py``).

The document's passages are looked up in the mining pool by document id (the pool holds the
whole corpus, cut as the run cuts it). A document of one passage gives that passage; of several,
the passage the embedder scores highest for the query (the card says so). A document id the
corpus does not hold stops the run, naming the pair's file and line: it is bad input, like a
corpus row without text, not a row to drop.
"""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..embed.embedder import Embedder
from ..embed.pool import PassagePool
from ..readers.base import CorpusError
from ..step import Row, Step, StepResult


class PairPositive(Step):
    name = "pair_positive"
    task_types = frozenset({"retrieval"})

    def __init__(self, embedder: Embedder, pool: PassagePool):
        self.embedder = embedder
        self.pool = pool

    def __call__(self, rows: list[Row]) -> StepResult:
        named = [row for row in rows if not row[S.POSITIVE]]
        if named:
            self._choose(named)
        return StepResult(kept=rows)

    def _choose(self, rows: list[Row]) -> None:
        found = self.pool.passages_of({row[S.SOURCE_ID] for row in rows})
        for row in rows:
            if row[S.SOURCE_ID] not in found:
                raise CorpusError(
                    f"{row[S.WORK_PAIR]}: document {row[S.SOURCE_ID]!r} is not in the corpus (--corpus), "
                    "or not among its first negatives.pool_size passages"
                )
        several = [row for row in rows if len(found[row[S.SOURCE_ID]]) > 1]
        queries = self.embedder.encode([row[S.QUERY] for row in several], role="query") if several else None
        ranked = {id(row): q for row, q in zip(several, queries if queries is not None else [], strict=True)}
        for row in rows:
            candidates = found[row[S.SOURCE_ID]]  # (pool row, passage id, text), in corpus order
            best = candidates[0]
            if id(row) in ranked:
                vectors = self.pool.vectors[[c[0] for c in candidates]].astype(np.float32)
                best = candidates[int(np.argmax(vectors @ ranked[id(row)]))]
            _, row[S.PASSAGE_ID], row[S.POSITIVE] = best
