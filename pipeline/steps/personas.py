"""Step: attach the top-k candidate personas of each passage (paper: top-5 by embedding similarity)."""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..embedder import Embedder
from ..personas import top_k
from .base import Row, Step, StepResult


class PersonaCandidates(Step):
    name = "personas"
    tasks = frozenset({"retrieval", "classification"})

    def __init__(self, embedder: Embedder, personas: list[str], k: int = 5):
        self.embedder = embedder
        self.personas = personas
        self.k = k
        self._persona_vectors: np.ndarray | None = None  # encoded once, on first use

    def persona_vectors(self) -> np.ndarray:
        if self._persona_vectors is None:
            self._persona_vectors = self.embedder.encode(self.personas)
        return self._persona_vectors

    def __call__(self, rows: list[Row]) -> StepResult:
        if not rows:
            return StepResult()
        passages = self.embedder.encode([row[S.POSITIVE] for row in rows])
        best = top_k(passages, self.persona_vectors(), self.k)
        for row, indices in zip(rows, best, strict=True):
            row[S.WORK_CANDIDATES] = [self.personas[i] for i in indices]
        return StepResult(kept=rows)
