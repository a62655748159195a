"""Parquet shards written atomically through the explicit schemas of ``schema.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema as S
from .. import storage
from ..redaction import redact
from ..step import Dropped, Row


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> Path:
    """Write a shard whole (temporary + rename, or one PUT): a reader never sees half of one.

    A shard is one chunk's rows, so it is built in memory and written in one piece.
    """
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    storage.write_bytes(path, buffer.getvalue().to_pybytes())
    return path


def data_records(rows: list[Row]) -> list[dict]:
    records = []
    for row in rows:
        record = S.project_row(row)
        hashes = row.get(S.WORK_PROMPTS, {})
        record[S.PROMPT_HASH] = ";".join(f"{name}={h}" for name, h in sorted(hashes.items()))
        record[S.NEGATIVES] = list(row.get(S.NEGATIVES) or [])
        record[S.NEGATIVE_SOURCES] = list(row.get(S.NEGATIVE_SOURCES) or [])
        records.append(record)
    return records


def records_by_task_type(rows: list[Row]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in data_records(rows):
        grouped.setdefault(record[S.TASK_TYPE], []).append(record)
    return grouped


def rejected_records(stage: str, dropped: list[Dropped]) -> list[dict]:
    return [
        {
            S.ID: d.row.get(S.ID),
            S.PASSAGE_ID: d.row.get(S.PASSAGE_ID),
            S.TASK_TYPE: d.row.get(S.TASK_TYPE),
            S.LANGUAGE: d.row.get(S.LANGUAGE),
            S.PASSAGE_LANGUAGE: d.row.get(S.PASSAGE_LANGUAGE),
            S.TARGET_LANGUAGE: d.row.get(S.TARGET_LANGUAGE),
            S.QUESTION_TYPE: d.row.get(S.QUESTION_TYPE),
            S.DIFFICULTY: d.row.get(S.DIFFICULTY),
            S.PERSONA: d.row.get(S.PERSONA),
            S.STAGE: stage,
            S.REASON: d.reason,
            S.DETAIL: redact(d.detail) if d.detail else d.detail,  # a server's words may repeat a key
            S.RAW_OUTPUT: d.raw_output,
            S.QUERY: d.row.get(S.QUERY),
            S.POSITIVE: d.row.get(S.POSITIVE),
            S.NEGATIVES: d.row.get(S.NEGATIVES),
            S.NEGATIVE_SOURCES: d.row.get(S.NEGATIVE_SOURCES),
            S.NEGATIVE_SCORES: d.row.get(S.NEGATIVE_SCORES),
            S.SCORES: json.dumps(scores)
            if (scores := {**d.row.get(S.WORK_SCORES, {}), **(d.scores or {})})
            else None,
        }
        for d in dropped
    ]
