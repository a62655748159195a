"""Your own query-passage pairs (``--pairs``): each row a query and what answers it.

A pair names its positive in one of two ways:

- a corpus document, by the id the corpus file gives it (``passage_id``, ``doc_id``, ...): the
  ``pair_positive`` step (``generate/pairs.py``) takes the document's passage the embedder ranks
  first for the query (a document short enough to be one passage is that passage);
- the positive text itself (``positive``, ``passage``, ...).

The file is read by the corpus's readers (JSONL, Parquet, TSV/CSV, JSON arrays, compressed,
URLs), cut into blocks for the tasks like a corpus, with the same rules: a row without a query,
or with neither a document id nor a positive, stops the run naming file, line and field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from ..config import PairsConfig
from .base import CorpusError, RawRow
from .documents import LANGUAGE_FIELDS, Passage, ReadStats, _pick

QUERY_FIELDS = ("query", "question", "anchor")
DOCUMENT_FIELDS = ("passage_id", "doc_id", "document_id", "corpus_id")
POSITIVE_FIELDS = ("positive", "passage", "answer_text")
PAIR_ID_FIELDS = ("id", "_id", "query_id")
KIND = "pair"  # Passage.kind of a pair: generate/rows.py gives it a retrieval row with its query


def _text(row: dict, key: str | None) -> str | None:
    value = row.get(key) if key else None
    if value is None or (isinstance(value, float) and value != value):  # null, or a CSV's empty cell as NaN
        return None
    return str(value)


def pair_passages(rows: Iterable[RawRow], config: PairsConfig, stats: ReadStats) -> Iterator[Passage]:
    """One passage per pair: its text the positive given (empty while a document id names it),
    its meta the query, the document id and where the pair was read."""
    for where, row in rows:
        stats.counts["pairs_read"] += 1
        stats.counts["passages"] += 1  # each pair is one passage of the run (its rows, the pilot)
        query_key = _pick(row, config.query_field, QUERY_FIELDS)
        query = _text(row, query_key)
        if query is None or not query.strip():
            wanted = config.query_field or " or ".join(QUERY_FIELDS)
            raise CorpusError(f"{where}: no query ({wanted}); name the column with pairs.query_field")
        document = _text(row, _pick(row, config.document_field, DOCUMENT_FIELDS))
        positive = _text(row, _pick(row, config.positive_field, POSITIVE_FIELDS))
        if not document and not (positive and positive.strip()):
            raise CorpusError(
                f"{where}: neither a document id ({' or '.join(DOCUMENT_FIELDS)}) nor a positive text "
                f"({' or '.join(POSITIVE_FIELDS)}); name the column with pairs.document_field or "
                "pairs.positive_field"
            )
        given_id = _text(row, _pick(row, config.id_field, PAIR_ID_FIELDS))
        pair_id = given_id or hashlib.sha256(f"{query}\x1f{document or positive}".encode()).hexdigest()[:16]
        language = _text(row, _pick(row, config.language_field, LANGUAGE_FIELDS)) or ""
        yield Passage(
            passage_id=f"pair:{pair_id}",
            source_id=document or f"pair:{pair_id}",
            title=None,
            text="" if document else positive,
            language=language,
            kind=KIND,
            meta={"query": query, "document": document or "", "where": str(where)},
        )
