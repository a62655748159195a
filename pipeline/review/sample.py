"""The rows a person reviews: a stratified sample of a finished run, drawn by streaming its shards.

A stratum is the gate's outcome (kept, or the stage and reason that dropped the row) with
the row's task type, language pair, question type and difficulty. One pass over the shards
reads only those few columns and keeps a seeded reservoir of row references per stratum, so
memory grows with the number of strata and the sample size, never with the run. The sample
gives every stratum at least one row (largest strata first, while slots last) and shares the
rest in proportion to the strata's sizes; each row carries its stratum's size so that
``calibrate`` can weight a label by how many rows of the run it stands for. The full row is
read only when its page is asked for (one shard at a time, the last few kept in memory).
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .. import schema as S
from .. import storage
from ..run.folder import RunFolder

STRATUM_COLUMNS = [S.ID, S.TASK_TYPE, S.LANGUAGE, S.PASSAGE_LANGUAGE, S.TARGET_LANGUAGE]
STRATUM_COLUMNS += [S.QUESTION_TYPE, S.DIFFICULTY]
SHARDS_IN_MEMORY = 4


@dataclass(frozen=True)
class RowRef:
    """Where one sampled row lives, and the stratum it was drawn from."""

    kept: bool
    shard: str  # path inside the run (data/... or rejected/...)
    index: int  # row number inside the shard
    row_id: str
    stratum: str
    stratum_rows: int


def stratum_of(row: dict, outcome: str) -> str:
    """``kept | retrieval | en->en | summary | high_school`` (absent fields leave a ``-``)."""
    pair = S.language_pair(row) if row.get(S.LANGUAGE) else "-"
    parts = [outcome, row.get(S.TASK_TYPE) or "-", pair]
    parts += [row.get(S.QUESTION_TYPE) or "-", row.get(S.DIFFICULTY) or "-"]
    return " | ".join(parts)


def _reservoir(items: list, seen: int, item, size: int, rng: random.Random) -> None:
    if len(items) < size:
        items.append(item)
    else:
        slot = rng.randrange(seen)
        if slot < size:
            items[slot] = item


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Slots per stratum: one each (largest strata first) while slots last, the rest by size.

    Each further slot goes to the stratum furthest below its proportional share.
    """
    order = sorted(sizes, key=lambda k: (-sizes[k], k))
    rows = sum(sizes.values())
    budget = min(total, rows)
    slots = {k: int(i < budget) for i, k in enumerate(order)}
    for _ in range(budget - sum(slots.values())):
        open_ = [k for k in order if slots[k] < sizes[k]]
        key = max(open_, key=lambda k: sizes[k] * budget / rows - slots[k])
        slots[key] += 1
    return slots


def _available(shard: Path, wanted: list[str]) -> list[str]:
    names = set(storage.parquet_file(shard).schema_arrow.names)
    return [c for c in wanted if c in names]


def draw_sample(out: str | Path, size: int, seed: int) -> list[RowRef]:
    """The stratified sample of ``size`` rows of a finished run, in a seeded review order."""
    folder = RunFolder(out)
    rng = random.Random(seed)
    reservoirs: dict[str, list] = {}
    seen: dict[str, int] = {}
    sources = [(True, p) for p in folder.data_shards()] + [(False, p) for p in folder.rejected_shards()]
    for kept, shard in sources:
        wanted = STRATUM_COLUMNS if kept else [*STRATUM_COLUMNS, S.STAGE, S.REASON]
        name = folder.relative(shard)
        index = 0
        parquet = storage.parquet_file(shard)
        for batch in parquet.iter_batches(batch_size=4096, columns=_available(shard, wanted)):
            for row in batch.to_pylist():
                outcome = "kept" if kept else f"dropped {row[S.STAGE]}/{row[S.REASON]}"
                key = stratum_of(row, outcome)
                seen[key] = seen.get(key, 0) + 1
                row_id = row.get(S.ID) or f"{name}#{index}"
                _reservoir(reservoirs.setdefault(key, []), seen[key], (kept, name, index, row_id), size, rng)
                index += 1
    slots = allocate(seen, size)
    sample = [
        RowRef(kept, shard, index, row_id, key, seen[key])
        for key in sorted(reservoirs)
        for kept, shard, index, row_id in sorted(reservoirs[key], key=lambda r: (r[1], r[2]))[: slots[key]]
    ]
    rng.shuffle(sample)  # the first rows reviewed already cover many strata
    return sample


class RowReader:
    """Full rows of sampled references, reading each shard whole and keeping the last few."""

    def __init__(self, out: str | Path):
        self.folder = RunFolder(out)
        self._tables: OrderedDict[str, list[dict]] = OrderedDict()

    def row(self, ref: RowRef) -> dict:
        rows = self._tables.get(ref.shard)
        if rows is None:
            rows = storage.read_table(self.folder.resolve(ref.shard)).to_pylist()
            self._tables[ref.shard] = rows
            while len(self._tables) > SHARDS_IN_MEMORY:
                self._tables.popitem(last=False)
        self._tables.move_to_end(ref.shard)
        return view(rows[ref.index], ref)


def view(row: dict, ref: RowRef) -> dict:
    """One sampled row as the page shows it and a label records it, kept or dropped alike."""
    scores = json.loads(row[S.SCORES]) if row.get(S.SCORES) else {}
    negatives = list(row.get(S.NEGATIVES) or [])
    return {
        "row_id": ref.row_id,
        "kept": ref.kept,
        "stratum": ref.stratum,
        "stratum_rows": ref.stratum_rows,
        "task_type": row.get(S.TASK_TYPE),
        "language_pair": S.language_pair(row) if row.get(S.LANGUAGE) else None,
        "question_type": row.get(S.QUESTION_TYPE),
        "difficulty": row.get(S.DIFFICULTY),
        "persona": row.get(S.PERSONA),
        "query": row.get(S.QUERY),
        "raw_output": row.get(S.RAW_OUTPUT),
        "positive": row.get(S.POSITIVE),
        "negatives": negatives,
        "negative_sources": list(row.get(S.NEGATIVE_SOURCES) or [])[: len(negatives)],
        "negative_scores": list(row.get(S.NEGATIVE_SCORES) or [])[: len(negatives)],
        "positive_score": row.get(S.POSITIVE_SCORE, scores.get("cosine")),
        "judge_score": row.get(S.JUDGE_SCORE, scores.get("judge_positive")),
        "stage": row.get(S.STAGE),
        "reason": row.get(S.REASON),
        "detail": row.get(S.DETAIL),
        "scores": scores,
    }
