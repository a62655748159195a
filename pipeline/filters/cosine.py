"""Step: keep pairs whose query and positive are close in the embedder's space.

The paper keeps cos(query, passage) > 0.7. That number belongs to the paper's
(unnamed) embedder: each embedder brings its own calibrated threshold (e5's
cosines sit in a narrow band near 0.8), and a percentile mode drops the lowest
share of the run instead. With all-MiniLM-L6-v2 on SciFact, 0.7 was measured at
0.91 precision (docs/quality.md). A pair in a language the embedder does not
handle has no meaningful score: it is dropped as ``unscored_language`` unless
``filters.cosine.unscored=keep`` passes it through (counted as an event).
Code pairs (a question and a function, two functions) sit lower on every embedder's scale:
code rows get their own threshold, measured per embedder (``filters.cosine.code_threshold``).
"""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..config import CODE_TASK_TYPES, TASK_TYPES, CosineConfig
from ..embed.embedder import Embedder
from ..step import Dropped, Row, StatefulStep, StepResult, set_score

DEFAULT_THRESHOLD = 0.7  # the paper's, for embedders that give no calibrated one


class CosineFilter(StatefulStep):
    name = "cosine"
    # classification pairs a text with a label description, STS pairs are dissimilar by design
    task_types = frozenset(TASK_TYPES) - {"classification", "sts"}

    def __init__(self, embedder: Embedder, config: CosineConfig):
        self.embedder = embedder
        self.config = config
        self._seen: list[float] = []  # every score of the run so far, for percentile mode

    def reset(self) -> None:
        """Each task has its own percentile history, whatever process runs it."""
        self._seen = []

    def resume(self, reached: list[dict], passed: list[dict]) -> None:
        """Restore the percentile history from the rows an earlier run already scored.

        A kept row's positive score may come from the margin step instead (a language pair
        this filter skipped), so kept rows count only where this filter would have scored them;
        a rejected row carries a cosine score only if this filter set it.
        """
        self._seen = [
            r[S.WORK_SCORES]["cosine"]
            for r in reached
            if r[S.WORK_SCORES].get("cosine") is not None
            and (S.STAGE in r or self.embedder.supports(r[S.LANGUAGE], S.positive_language(r)))
        ]

    def threshold(self, batch_scores: np.ndarray) -> float | None:
        """The percentile mode's cut over the run so far; None in absolute mode (see ``absolute``)."""
        if self.config.mode == "absolute":
            return None
        self._seen.extend(batch_scores.tolist())
        return float(np.percentile(self._seen, self.config.percentile))

    def absolute(self, row: Row) -> float:
        """The fixed cut of a row: code pairs sit lower on every embedder's scale than text pairs."""
        if row[S.TASK_TYPE] in CODE_TASK_TYPES:
            if self.config.code_threshold is not None:
                return self.config.code_threshold
            return getattr(self.embedder, "code_cosine_threshold", DEFAULT_THRESHOLD)
        if self.config.threshold is not None:
            return self.config.threshold
        return getattr(self.embedder, "cosine_threshold", DEFAULT_THRESHOLD)

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        scored = []
        for row in rows:
            pair = (row[S.LANGUAGE], S.positive_language(row))
            if self.embedder.supports(*pair):
                scored.append(row)
            elif self.config.unscored == "keep":
                result.kept.append(row)
                result.events["cosine_skipped_unsupported_language"] += 1
            else:
                covered = ", ".join(self.embedder.languages or ())
                result.dropped.append(
                    Dropped(
                        row,
                        "unscored_language",
                        detail=f"{self.embedder.name} scores only {covered}, not {pair[0]}->{pair[1]}",
                    )
                )
        if not scored:
            return result
        queries = self.embedder.encode([r[S.QUERY] for r in scored], role="query")
        positives = self.embedder.encode([r[S.POSITIVE] for r in scored], role="passage")
        scores = np.einsum("nd,nd->n", queries, positives)  # (N,) row-wise cosines
        percentile_cut = self.threshold(scores)
        for row, score in zip(scored, scores, strict=True):
            cut = self.absolute(row) if percentile_cut is None else percentile_cut
            row[S.POSITIVE_SCORE] = float(score)
            set_score(row, "cosine", float(score))
            if score > cut:
                result.kept.append(row)
            else:
                result.dropped.append(
                    Dropped(
                        row,
                        "low_cosine",
                        detail=f"cos {score:.3f} <= {cut:.3f}",
                        scores={"cosine": float(score)},
                    )
                )
        return result
