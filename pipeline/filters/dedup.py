"""Step: one query per idea across the whole run, and none copied from an evaluation set.

- exact: equal after normalisation (Unicode NFKC, case, punctuation, spacing);
- near: MinHash LSH over character 4-grams of the normalised query, which works
  for short queries and for scripts without spaces alike;
- decontamination: a query sharing an n-gram (words; characters for CJK) with
  a query of a named evaluation set is dropped, so benchmarks stay clean.

State lives in the step, so it spans every batch of the run.
"""

from __future__ import annotations

from pathlib import Path

from datasketch import MinHash, MinHashLSH

from .. import schema as S
from ..config import DedupConfig
from ..jsonl import iter_jsonl
from ..step import Dropped, Row, StatefulStep, StepResult
from ..text import ngrams, normalise, tokens


def read_eval_queries(path: str) -> list[str]:
    """Queries of an evaluation set: BEIR queries.jsonl (`text`), JSONL with `query`, or one per line."""
    file = Path(path)
    if file.is_dir():
        file = file / "queries.jsonl"
    if file.suffix == ".jsonl":
        queries = []
        for where, row in iter_jsonl(file):
            text = row.get("text") or row.get("query")
            if not isinstance(text, str):
                raise ValueError(f"{where}: no string field `text` or `query`")
            queries.append(text)
        return queries
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def query_minhash(norm: str, num_perm: int) -> MinHash:
    """MinHash of a normalised query's character 4-grams (short queries and unspaced scripts alike)."""
    minhash = MinHash(num_perm=num_perm, seed=1)
    text = norm.replace(" ", "_")
    for i in range(max(1, len(text) - 3)):
        minhash.update(text[i : i + 4].encode("utf-8"))
    return minhash


class Dedup(StatefulStep):
    name = "dedup"

    def __init__(self, config: DedupConfig):
        self.config = config
        self.reset()
        self._eval_ngrams: set[tuple[str, ...]] = set()
        self._eval_exact: set[str] = set()
        for path in config.decontaminate:
            for query in read_eval_queries(path):
                self._eval_ngrams |= ngrams(tokens(query), config.decontaminate_ngram)
                self._eval_exact.add(normalise(query))

    def reset(self) -> None:
        """Forget every query seen: each task deduplicates on its own, whatever process runs it."""
        # keyed by task type: a bitext source sentence may equal an STS sentence without harm
        self._exact: dict[tuple[str, str], str] = {}  # (task type, normalised query) -> first row id
        self._lsh: dict[str, MinHashLSH] = {}
        self._lsh_ids: set[str] = set()

    def _index(self, task: str) -> MinHashLSH:
        if task not in self._lsh:
            self._lsh[task] = MinHashLSH(threshold=self.config.near_threshold, num_perm=self.config.num_perm)
        return self._lsh[task]

    def resume(self, reached: list[dict], passed: list[dict]) -> None:
        """Remember the queries that passed this step in chunks an earlier run already wrote."""
        for row in passed:
            task = row.get(S.TASK_TYPE) or "retrieval"
            norm = normalise(row[S.QUERY])
            self._exact.setdefault((task, norm), row[S.ID])
            if self.config.near and row[S.ID] not in self._lsh_ids:
                self._index(task).insert(row[S.ID], self._minhash(norm))
                self._lsh_ids.add(row[S.ID])

    def _minhash(self, norm: str) -> MinHash:
        return query_minhash(norm, self.config.num_perm)

    def _contaminated(self, query: str, norm: str) -> bool:
        if norm in self._eval_exact:
            return True
        grams = ngrams(tokens(query), self.config.decontaminate_ngram)
        return bool(grams & self._eval_ngrams)

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for row in rows:
            query, task = row[S.QUERY], row[S.TASK_TYPE]
            norm = normalise(query)
            if (self._eval_exact or self._eval_ngrams) and self._contaminated(query, norm):
                result.dropped.append(
                    Dropped(row, "contaminated", detail="shares an n-gram with an eval query")
                )
                continue
            if self.config.exact and (task, norm) in self._exact:
                result.dropped.append(
                    Dropped(row, "duplicate", detail=f"same query as row {self._exact[(task, norm)]}")
                )
                continue
            if self.config.near:
                minhash = self._minhash(norm)
                similar = self._index(task).query(minhash)
                if similar:
                    result.dropped.append(Dropped(row, "near_duplicate", detail=f"close to row {similar[0]}"))
                    continue
                self._index(task).insert(row[S.ID], minhash)
                self._lsh_ids.add(row[S.ID])
            self._exact.setdefault((task, norm), row[S.ID])
            result.kept.append(row)
        return result
