"""Steps: hard-negative candidates, written by the LLM and mined from the corpus.

Both only propose candidates; ``NegativeMargin`` then applies the same
positive-aware rule to every candidate, whatever wrote it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import schema as S
from ..budgets import JSON_OVERHEAD, capped, chars_budget
from ..config import NegativesConfig
from ..embedder import Embedder
from ..engine import ChatEngine
from ..index import VectorIndex
from ..langid import check_language, language_name
from ..outputs import NEGATIVE_MAX_CHARS, negatives_output
from ..prompts import PromptLibrary
from .base import Row, Step, StepResult
from .dedup import normalise
from .llm_call import LLMStep, copies_example

log = logging.getLogger(__name__)

NEGATIVE_LENGTH_SLACK = 1.5  # a negative is "about as long as the passage": room for half as much again


class WriteNegatives(LLMStep):
    """The LLM writes look-alike passages that do not answer the query, in the passage's language."""

    name = "negatives_llm"
    tasks = frozenset({"retrieval"})

    def __init__(
        self,
        engine: ChatEngine,
        prompts: PromptLibrary,
        config: NegativesConfig,
        check_language: bool = True,
        task: str = "retrieval",
    ):
        super().__init__(engine, prompts, config)
        self.check_language = check_language
        self.template = f"{task}/negatives"
        self.output = negatives_output(config.llm_count)

    def __call__(self, rows: list[Row]) -> StepResult:
        if self.config.llm_count == 0 or not rows:
            return StepResult(kept=rows)
        variables = [
            {
                "query": row[S.QUERY],
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "count": self.config.llm_count,
            }
            for row in rows
        ]
        limits = [
            capped(
                JSON_OVERHEAD
                + self.config.llm_count
                * chars_budget(
                    min(NEGATIVE_MAX_CHARS, int(NEGATIVE_LENGTH_SLACK * len(row[S.POSITIVE]))),
                    row[S.PASSAGE_LANGUAGE],
                ),
                self.config.max_tokens,
            )
            for row in rows
        ]
        answered, result = self.ask(self.template, rows, variables, self.output, limits)
        # A failed call costs the row its LLM negatives, not the row: mined ones may still serve.
        for failed in result.dropped:
            log.debug("negatives call failed for %s: %s", failed.row[S.ID], failed.detail)
            failed.row[S.WORK_LLM_NEGATIVES] = []
            result.kept.append(failed.row)
            why = "invalid" if failed.reason == "invalid_json" else failed.reason
            result.events[f"negatives_llm_{why}"] += 1
        result.dropped = []
        for row, answer, prompt in answered:
            positive = normalise(row[S.POSITIVE])
            kept = []
            for text in answer.negatives:
                text = " ".join(text.split())
                if normalise(text) == positive:
                    result.events["negatives_removed_copy_of_positive"] += 1
                elif copies_example(text, prompt):
                    result.events["negatives_removed_copied_example"] += 1
                elif self.check_language and not check_language(text, row[S.PASSAGE_LANGUAGE])[0]:
                    result.events["negatives_removed_wrong_language"] += 1
                else:
                    kept.append(text)
            row[S.WORK_LLM_NEGATIVES] = kept
            result.kept.append(row)
        return result


SAME_DOCUMENT_ROOM = 16  # passages of one document a search may have to skip before its ranks


@dataclass
class PassagePool:
    """Corpus passages encoded once, to mine negatives from."""

    texts: list[str]
    passage_ids: list[str]
    source_ids: list[str]
    vectors: np.ndarray  # (P, d) unit vectors
    _index: VectorIndex | None = None

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k passages nearest to each query (exact or HNSW, pipeline/index.py)."""
        if self._index is None:
            self._index = VectorIndex(self.vectors)
        return self._index.search(queries, k)

    @classmethod
    def build(cls, passages, embedder: Embedder, cache_dir: Path | None = None) -> PassagePool:
        """Encode the passages, or load their vectors from ``cache_dir``.

        The cache key is the hash of every passage text and the embedder, so a
        changed corpus, splitter or embedder can never reuse stale vectors.
        """
        passages = list(passages)
        texts = [p.text for p in passages]
        key = hashlib.sha256(embedder.name.encode())
        for text in texts:
            key.update(hashlib.sha256(text.encode()).digest())
        cached = cache_dir / f"pool-{key.hexdigest()[:24]}.npy" if cache_dir else None
        if cached is not None and cached.exists():
            vectors = np.load(cached)
        else:
            vectors = embedder.encode(texts, show_progress=True)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(cached.name + ".tmp.npy")
                np.save(tmp, vectors)
                tmp.replace(cached)
        return cls(texts, [p.passage_id for p in passages], [p.source_id for p in passages], vectors)


class MineNegatives(Step):
    """Candidates from a rank range of the passages nearest to the query.

    The positive, other passages of the same document, and exact copies of the
    positive are skipped: they are likely relevant, and a relevant "negative"
    teaches the model the wrong thing.
    """

    name = "negatives_mined"
    tasks = frozenset({"retrieval"})

    def __init__(self, embedder: Embedder, pool: PassagePool, config: NegativesConfig):
        self.embedder = embedder
        self.pool = pool
        self.config = config

    def __call__(self, rows: list[Row]) -> StepResult:
        if self.config.mined_count == 0 or not rows or not self.pool.texts:
            return StepResult(kept=rows)
        queries = self.embedder.encode([r[S.QUERY] for r in rows], role="query")
        # rank_max plus room for the skipped passages of the positive's own document
        scores, nearest = self.pool.nearest(queries, self.config.rank_max + SAME_DOCUMENT_ROOM)
        for row, order, row_scores in zip(rows, nearest, scores, strict=True):
            positive = normalise(row[S.POSITIVE])
            candidates, rank = [], 0
            for index, score in zip(order, row_scores, strict=True):
                if index < 0 or rank >= self.config.rank_max:
                    break  # an HNSW search that found fewer; or deep enough
                if (
                    self.pool.passage_ids[index] == row[S.PASSAGE_ID]
                    or self.pool.source_ids[index] == row[S.SOURCE_ID]
                    or normalise(self.pool.texts[index]) == positive
                ):
                    continue  # not counted as a rank: the positive's own document
                if rank >= self.config.rank_min:
                    candidates.append({"text": self.pool.texts[index], "score": float(score)})
                rank += 1
            row[S.WORK_MINED_NEGATIVES] = candidates
        return StepResult(kept=rows)
