"""A run's review labels: ``OUT/review/labels-*.parquet``, append-only, one file per saved decision.

Every decision is written whole as its own small Parquet file (temporary + rename locally,
one PUT on an object store) the moment it is made, so a closed tab, a stopped server or two
tabs saving at once lose nothing. Reading takes every file, counts a resent decision (same
``decision_id``) once, and lets the latest decision for a row win. ``compact`` merges the
files into one when a review starts: the merged file is written before any file it holds is
removed, so a crash in between leaves duplicates that reading ignores, never a loss.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema as S
from .. import storage
from ..run.folder import RunFolder


class LabelError(ValueError):
    """A decision that cannot be saved: the message says which field is wrong."""


@dataclass
class Decision:
    """What a reviewer decided about one sampled row, with what calibration needs of the row."""

    row: dict  # the sampled row's view (pipeline/review/sample.py)
    verdict: str
    false_negatives: list[int]
    note: str | None
    reviewer: str
    decision_id: str
    time: dt.datetime

    def record(self) -> dict:
        row = self.row
        return {
            S.DECISION_ID: self.decision_id,
            S.ROW_ID: row["row_id"],
            S.KEPT: row["kept"],
            S.VERDICT: self.verdict,
            S.FALSE_NEGATIVES: sorted(set(self.false_negatives)),
            S.NOTE: self.note,
            S.REVIEWER: self.reviewer,
            S.TIME: self.time,
            S.STRATUM: row["stratum"],
            S.STRATUM_ROWS: row["stratum_rows"],
            S.TASK_TYPE: row["task_type"],
            S.STAGE: row["stage"],
            S.REASON: row["reason"],
            S.POSITIVE_SCORE: row["positive_score"],
            S.JUDGE_SCORE: row["judge_score"],
            S.NEGATIVE_SCORES: row["negative_scores"],
            S.NEGATIVE_SOURCES: row["negative_sources"],
            S.SCORES: _scores_json(row["scores"]),
        }


def _scores_json(scores: dict) -> str | None:
    return json.dumps(scores, sort_keys=True) if scores else None


def check_decision(body: object, row: dict | None, reviewer: str) -> Decision:
    """A posted decision, checked field by field before anything is written."""
    if not isinstance(body, dict):
        raise LabelError("the body must be a JSON object")
    unknown = set(body) - {"decision_id", "row_id", "verdict", "false_negatives", "note"}
    if unknown:
        raise LabelError(f"unknown field(s): {', '.join(sorted(unknown))}")
    decision_id = body.get("decision_id")
    if not isinstance(decision_id, str) or not 8 <= len(decision_id) <= 64 or not decision_id.isalnum():
        raise LabelError("decision_id: 8 to 64 letters or digits")
    if row is None:
        raise LabelError("row_id: not a row of this review's sample")
    verdict = body.get("verdict")
    if verdict not in S.VERDICTS:
        raise LabelError(f"verdict: one of {', '.join(S.VERDICTS)}")
    marks = body.get("false_negatives", [])
    if not isinstance(marks, list) or not all(type(i) is int for i in marks):
        raise LabelError("false_negatives: a list of negative numbers")
    if any(not 0 <= i < len(row["negatives"]) for i in marks):
        raise LabelError(f"false_negatives: this row has {len(row['negatives'])} negative(s)")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise LabelError("note: text of at most 2000 characters")
    return Decision(
        row=row,
        verdict=verdict,
        false_negatives=list(marks),
        note=note or None,
        reviewer=reviewer,
        decision_id=decision_id,
        time=dt.datetime.now(dt.timezone.utc),
    )


def _table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=S.REVIEW_SCHEMA)


def _write(path: Path, records: list[dict]) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(_table(records), buffer, compression="zstd")
    storage.write_bytes(path, buffer.getvalue().to_pybytes())


def _file_name() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"labels-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def read_records(files: list[Path]) -> list[dict]:
    """Every decision in these files, each ``decision_id`` once, oldest first."""
    unique: dict[str, dict] = {}
    for path in files:
        for record in storage.read_table(path).to_pylist():
            unique.setdefault(record[S.DECISION_ID], record)
    return sorted(unique.values(), key=lambda r: (r[S.TIME], r[S.DECISION_ID]))


def latest(records: list[dict]) -> dict[str, dict]:
    """The decision that counts for each row: its latest."""
    return {r[S.ROW_ID]: r for r in records}


class LabelStore:
    """The labels of one run: saved one decision per file, read back whole."""

    def __init__(self, out: str | Path):
        self.folder = RunFolder(out)

    def files(self) -> list[Path]:
        return self.folder.review_files()

    def records(self) -> list[dict]:
        return read_records(self.files())

    def save(self, decision: Decision) -> Path:
        path = self.folder.review_folder / _file_name()
        _write(path, [decision.record()])
        return path

    def compact(self) -> int:
        """Merge every label file into one; returns how many files were merged (0 or 1: nothing to do)."""
        files = self.files()
        if len(files) < 2:
            return 0
        _write(self.folder.review_folder / _file_name(), read_records(files))
        for path in files:
            storage.remove(path)
        return len(files)


def load_labels(path: str | Path) -> list[dict]:
    """The latest decision per row from a run folder (its ``review/``) or one label file."""
    location = storage.location(path)
    files = [location] if str(location).endswith(".parquet") else RunFolder(location).review_files()
    return list(latest(read_records(files)).values())
