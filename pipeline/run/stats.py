"""The run's funnel: rows in and out of every stage, and every reason a row was dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema as S
from .. import storage
from ..engine.base import Usage
from ..redaction import redact_data
from ..step import Dropped, Row, StepResult
from .folder import TaskState

# Breakdowns of kept and dropped rows: dimension -> how to read it off a row (None: not applicable).
GROUPS = {
    "task_type": lambda r: r.get(S.TASK_TYPE),
    "task_language": lambda r: f"{r[S.TASK_TYPE]} {r[S.LANGUAGE]}" if r.get(S.TASK_TYPE) else None,
    "language_pair": lambda r: S.language_pair(r) if r.get(S.TASK_TYPE) else None,
    "task_language_pair": lambda r: f"{r[S.TASK_TYPE]} {S.language_pair(r)}" if r.get(S.TASK_TYPE) else None,
    "question_type": lambda r: r.get(S.QUESTION_TYPE),
    "difficulty": lambda r: r.get(S.DIFFICULTY),
    "query_length_words": lambda r: r.get(S.QUERY_LENGTH_WORDS),
    "label": lambda r: r.get(S.LABEL),
    "sts_score": lambda r: r.get(S.SCORE) if r.get(S.SCORE) is not None else r.get(S.WORK_REQUESTED_SCORE),
}


def _edges(score: str) -> np.ndarray:
    # judge grades are integers 0-3, score gaps integers 0-4; the rest are cosine-like scores in [-1, 1]
    if score.startswith("judge"):
        return np.arange(0, 5)
    if score.endswith("_gap"):
        return np.arange(0, 6)
    return np.linspace(-1.0, 1.0, 21)


@dataclass
class StageCounts:
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)  # the stage's own LLM calls
    # LLM tokens spent, at this stage and before it, on the rows this stage dropped
    tokens_dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"in": self.rows_in, "out": self.rows_out}
        out.update({f"dropped_{reason}": n for reason, n in sorted(self.dropped.items())})
        out.update(sorted(self.events.items()))
        out["seconds"] = round(self.seconds, 3)
        if self.usage.requests or self.usage.cache_hits:
            out[LLM] = self.usage.to_json()
        if self.tokens_dropped:
            out[TOKENS_DROPPED] = self.tokens_dropped
        return out


LLM = "llm"  # key of a stage's token usage in stats.json
TOKENS_DROPPED = "tokens_on_dropped_rows"
NOT_EVENTS = {"in", "out", "seconds", LLM, TOKENS_DROPPED}  # stage keys that are not event counts


@dataclass
class RunStats:
    reading: Counter = field(default_factory=Counter)
    # rows created (one per passage and task type) and rows written; stages see only their task types
    rows_in: int = 0
    rows_out: int = 0
    stages: dict[str, StageCounts] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # score name -> {"kept": counts, "dropped": counts} over fixed bins
    histograms: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # dimension -> value -> {"kept": n, "dropped": n}, over final outcomes
    groups: dict[str, dict[str, Counter]] = field(default_factory=dict)
    tokens_kept: int = 0  # LLM tokens spent on the rows that were written
    engine: dict[str, Any] = field(default_factory=dict)  # settings the engine ran with (dtype, cache)

    def usage(self) -> Usage:
        """Every LLM call of the run, all stages together."""
        total = Usage()
        for counts in self.stages.values():
            total.merge(counts.usage)
        return total

    def token_summary(self) -> dict[str, Any]:
        """The run's cost: tokens in all, per kept pair, and what the prefix cache served."""
        total = self.usage()
        kept = self.rows_out
        out: dict[str, Any] = total.to_json()
        out["total_tokens"] = total.tokens
        out["computed_tokens"] = total.computed_tokens
        # the rows' own charges: what each row took, whether the engine or the reply cache answered
        out["tokens_on_kept_rows"] = self.tokens_kept
        out["tokens_on_dropped_rows"] = sum(c.tokens_dropped for c in self.stages.values())
        if total.cache_hits:
            out["used_tokens"] = total.tokens + total.cache_tokens
        if kept:
            out["tokens_per_kept_pair"] = round(total.tokens / kept, 1)
            # what a kept pair costs in computed tokens, prefix-cache hits excluded
            out["computed_tokens_per_kept_pair"] = round(total.computed_tokens / kept, 1)
            # what a kept pair took, replies from the reply cache included
            out["used_tokens_per_kept_pair"] = round((total.tokens + total.cache_tokens) / kept, 1)
            out["output_tokens_per_kept_pair"] = round(total.output_tokens / kept, 1)
            # the bill: engine time per million written pairs on this hardware (GPU-hours on a GPU)
            out["engine_hours_per_million_kept_pairs"] = round(total.seconds / kept * 1e6 / 3600, 1)
        return out

    def add_groups(self, row: Row, outcome: str) -> None:
        for dimension, read in GROUPS.items():
            value = read(row)
            if value is not None:
                key = f"{value:g}" if isinstance(value, float) else str(value)
                self.groups.setdefault(dimension, {}).setdefault(key, Counter())[outcome] += 1

    def add_scores(self, scores: dict[str, float], outcome: str) -> None:
        for name, value in scores.items():
            edges = _edges(name)
            hist = self.histograms.setdefault(
                name, {"kept": np.zeros(len(edges) - 1, int), "dropped": np.zeros(len(edges) - 1, int)}
            )
            index = int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))
            hist[outcome][index] += 1

    def add_outcomes(self, kept: list[Row], dropped: list[Dropped]) -> None:
        for row in kept:
            self.add_scores(row.get(S.WORK_SCORES, {}), "kept")
            self.add_groups(row, "kept")
            self.tokens_kept += row.get(S.WORK_TOKENS, 0)
        for drop in dropped:
            self.add_scores({**drop.row.get(S.WORK_SCORES, {}), **(drop.scores or {})}, "dropped")
            self.add_groups(drop.row, "dropped")

    def record(self, stage: str, rows_in: int, result: StepResult, seconds: float) -> None:
        counts = self.stages.setdefault(stage, StageCounts())
        counts.rows_in += rows_in
        counts.rows_out += len(result.kept)
        counts.dropped.update(d.reason for d in result.dropped)
        counts.events.update(result.events)
        counts.seconds += seconds
        counts.usage.merge(result.usage)
        counts.tokens_dropped += sum(d.row.get(S.WORK_TOKENS, 0) for d in result.dropped)
        if rows_in != len(result.kept) + len(result.dropped):
            raise RuntimeError(
                f"step {stage!r} lost rows: {rows_in} in, "
                f"{len(result.kept)} kept, {len(result.dropped)} dropped"
            )

    def to_json(self) -> dict[str, Any]:
        dropped = Counter()
        for counts in self.stages.values():
            dropped.update(counts.dropped)
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(dropped.items())),
            "reading": dict(sorted(self.reading.items())),
            "input": input_accounting(self.reading),
            "stages": {name: counts.to_json() for name, counts in self.stages.items()},
            "tokens": self.token_summary(),
            "engine": self.engine,
            "timings_seconds": {k: round(v, 3) for k, v in self.timings.items()},
            "histograms": {
                name: {
                    "edges": [round(float(e), 3) for e in _edges(name)],
                    "kept": hist["kept"].tolist(),
                    "dropped": hist["dropped"].tolist(),
                }
                for name, hist in sorted(self.histograms.items())
            },
            "groups": {
                dimension: {
                    value: {"kept": c["kept"], "dropped": c["dropped"]}
                    for value, c in sorted(values.items(), key=lambda kv: _natural(kv[0]))
                }
                for dimension, values in self.groups.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunStats:
        stats = cls(
            reading=Counter(data.get("reading", {})),
            rows_in=data.get("rows_in", 0),
            rows_out=data.get("rows_out", 0),
            timings=dict(data.get("timings_seconds", {})),
            tokens_kept=data.get("tokens", {}).get("tokens_on_kept_rows", 0),
            engine=dict(data.get("engine", {})),
        )
        for name, counts in data.get("stages", {}).items():
            stage = StageCounts(
                rows_in=counts["in"],
                rows_out=counts["out"],
                seconds=counts.get("seconds", 0.0),
                usage=Usage.from_json(counts.get(LLM, {})),
                tokens_dropped=counts.get(TOKENS_DROPPED, 0),
            )
            for key, value in counts.items():
                if key.startswith("dropped_"):
                    stage.dropped[key[len("dropped_") :]] = value
                elif key not in NOT_EVENTS:
                    stage.events[key] = value
            stats.stages[name] = stage
        for name, hist in data.get("histograms", {}).items():
            stats.histograms[name] = {k: np.asarray(hist[k], dtype=int) for k in ("kept", "dropped")}
        for dimension, values in data.get("groups", {}).items():
            stats.groups[dimension] = {value: Counter(c) for value, c in values.items()}
        return stats

    def merge(self, other: RunStats) -> None:
        """Add another task's counts to these (timings add up as work done, not wall time)."""
        self.reading.update(other.reading)
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.tokens_kept += other.tokens_kept
        for name, theirs in other.stages.items():
            mine = self.stages.setdefault(name, StageCounts())
            mine.rows_in += theirs.rows_in
            mine.rows_out += theirs.rows_out
            mine.dropped.update(theirs.dropped)
            mine.events.update(theirs.events)
            mine.seconds += theirs.seconds
            mine.usage.merge(theirs.usage)
            mine.tokens_dropped += theirs.tokens_dropped
        for key, value in other.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        for name, hist in other.histograms.items():
            mine = self.histograms.setdefault(name, {k: np.zeros_like(v) for k, v in hist.items()})
            for key in ("kept", "dropped"):
                mine[key] = mine[key] + hist[key]
        for dimension, values in other.groups.items():
            for value, counts in values.items():
                self.groups.setdefault(dimension, {}).setdefault(value, Counter()).update(counts)

    def write(self, path: Path) -> None:
        storage.write_json(path, redact_data(self.to_json()))

    @classmethod
    def of_tasks(cls, tasks: list[TaskState]) -> RunStats:
        """The run's stats: the saved stats of every task, added up."""
        stats = cls()
        reading: Counter = Counter()
        for state in tasks:
            saved = state.load().stats
            if saved:
                task_stats = cls.from_json(saved)
                reading += task_stats.reading  # each task reads only its own blocks: counts add up
                task_stats.reading = Counter()
                stats.merge(task_stats)
        stats.reading = reading
        return stats


def _natural(value: str) -> tuple:
    """Sort numbers as numbers ("4" < "12"), everything else alphabetically after them."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def format_groups(stats: dict[str, Any]) -> str:
    """Kept / dropped rows per task type, language pair, question type, difficulty, ..."""
    lines = []
    for dimension, values in stats.get("groups", {}).items():
        cells = "  ".join(f"{value}={c['kept']}/{c['kept'] + c['dropped']}" for value, c in values.items())
        lines.append(f"{dimension} (kept/total): {cells}")
    return "\n".join(lines)


ROW_SKIPS = ("skipped_empty_document", "skipped_duplicate_id")  # rows read and not used, by reason


AIM_DRAWS = ("aimed", "drawn_by_share", "not_drawn", "held_out")


def input_accounting(reading: Counter | dict) -> dict[str, Any]:
    """Every input row read, and where it went: ``rows_read = documents + sum(rows_skipped)``
    (with ``--pairs``: ``rows_read = pairs``, every pair a row; a bad pair stops the run).

    A row no reader could read stops the run naming its file and line, so it is never in
    here; blank lines and files of types no reader knows are counted beside the rows.
    """
    pairs = int(reading.get("pairs_read", 0))  # --pairs: the rows are pairs, each one a row to come
    rows_read = int(reading.get("documents_read", 0)) + pairs
    skipped = {name[len("skipped_") :]: int(reading.get(name, 0)) for name in ROW_SKIPS if reading.get(name)}
    files = {k[len("skipped_files_") :]: int(v) for k, v in reading.items() if k.startswith("skipped_files_")}
    if reading.get("skipped_binary_file"):
        files["binary .txt"] = int(reading["skipped_binary_file"])
    # an aimed run (aim/plan.py): each passage read was drawn as a target, drawn by share, or not
    aim = {name: int(reading[f"passages_{name}"]) for name in AIM_DRAWS if reading.get(f"passages_{name}")}
    return {
        "rows_read": rows_read,
        **({"pairs": pairs} if pairs else {}),
        "documents": rows_read - pairs - sum(skipped.values()),
        "rows_skipped": skipped,
        "blank_lines": int(reading.get("skipped_blank_line", 0)),
        "files_not_read": dict(sorted(files.items())),
        **({"aim": aim} if aim else {}),
    }


def format_input(accounting: dict[str, Any]) -> str:
    """The input's accounting as one line: rows read = documents + each skip; what was not read."""
    skips = "".join(f" + {n} {reason.replace('_', ' ')}" for reason, n in accounting["rows_skipped"].items())
    pairs = accounting.get("pairs")
    read = f"{pairs} pairs" if pairs else f"{accounting['documents']} documents"
    line = f"input: {accounting['rows_read']} rows read = {read}{skips}"
    if accounting["blank_lines"]:
        line += f"; {accounting['blank_lines']} blank lines"
    if accounting["files_not_read"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in accounting["files_not_read"].items())
        line += f"; files not read: {kinds}"
    if accounting.get("aim"):
        draws = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in accounting["aim"].items())
        line += f"; passages of the aim: {draws}"
    return line


def format_funnel(stats: dict[str, Any]) -> str:
    """The funnel of a stats.json as a plain-text table, then the score histograms."""
    lines = [f"{'stage':<18}{'in':>8}{'out':>8}  dropped"]
    for name, counts in stats.get("stages", {}).items():
        drops = ", ".join(f"{k[8:]}={v}" for k, v in counts.items() if k.startswith("dropped_"))
        lines.append(f"{name:<18}{counts['in']:>8}{counts['out']:>8}  {drops or '-'}")
        events = ", ".join(
            f"{k}={v}" for k, v in counts.items() if k not in NOT_EVENTS and not k.startswith("dropped_")
        )
        if events:
            lines.append(f"{'':<36}({events})")
    lines.append(f"{'total':<18}{stats.get('rows_in', 0):>8}{stats.get('rows_out', 0):>8}")
    reading = stats.get("reading", {})
    if reading:
        lines.append(format_input(stats.get("input") or input_accounting(reading)))
        lines.append("reading: " + ", ".join(f"{k}={v}" for k, v in reading.items()))
    for name, hist in stats.get("histograms", {}).items():
        edges = hist["edges"]
        cells = [
            f"{edges[b]:g}:{k}/{d}"
            for b, (k, d) in enumerate(zip(hist["kept"], hist["dropped"], strict=True))
            if k or d
        ]
        lines.append(f"{name} (bin start: kept/dropped): " + "  ".join(cells))
    if stats.get("groups"):
        lines.append(format_groups(stats))
    tokens = format_tokens(stats)
    if tokens:
        lines.append(tokens)
    return "\n".join(lines)


def format_tokens(stats: dict[str, Any]) -> str:
    """LLM cost per stage (tokens, cached share, throughput) and per kept pair."""
    llm_stages = {n: c for n, c in stats.get("stages", {}).items() if c.get(LLM)}
    if not llm_stages:
        return ""
    lines = [
        f"{'LLM stage':<18}{'requests':>9}{'prompt':>10}{'cached':>8}{'output':>9}"
        f"{'prompt/s':>10}{'output/s':>10}{'on dropped':>12}{'from cache':>11}"
    ]
    for name, counts in llm_stages.items():
        usage = counts[LLM]
        lines.append(
            f"{name:<18}{usage['requests']:>9}{usage['prompt_tokens']:>10}"
            f"{usage.get('cached_share', 0.0):>8.0%}{usage['output_tokens']:>9}"
            f"{usage.get('prompt_tokens_per_s', 0.0):>10.0f}{usage.get('output_tokens_per_s', 0.0):>10.1f}"
            f"{counts.get(TOKENS_DROPPED, 0):>12}{usage.get('reply_cache_hits', 0):>11}"
        )
    tokens = stats.get("tokens", {})
    if tokens.get("requests") or tokens.get("reply_cache_hits"):
        lines.append(
            f"{'all':<18}{tokens['requests']:>9}{tokens['prompt_tokens']:>10}"
            f"{tokens.get('cached_share', 0.0):>8.0%}{tokens['output_tokens']:>9}"
        )
    if tokens.get("reply_cache_hits"):
        saved = tokens["reply_cache_prompt_tokens"] + tokens["reply_cache_output_tokens"]
        lines.append(
            f"reply cache: {tokens['reply_cache_hits']} replies served, {saved} tokens not computed again"
        )
    if "tokens_per_kept_pair" in tokens:
        used = tokens.get("used_tokens", tokens["total_tokens"])
        lines.append(
            f"tokens per kept pair: {tokens['tokens_per_kept_pair']:g} "
            f"({tokens['computed_tokens_per_kept_pair']:g} not served from the prefix cache, "
            f"{tokens['output_tokens_per_kept_pair']:g} generated, "
            f"{tokens['used_tokens_per_kept_pair']:g} with the reply cache's); "
            f"{tokens['tokens_on_dropped_rows']} of {used} tokens went to dropped rows"
        )
        hours = tokens["engine_hours_per_million_kept_pairs"]
        lines.append(f"engine hours per million kept pairs at this speed: {hours:g}")
    elif tokens.get("total_tokens"):
        lines.append(f"tokens per kept pair: no kept rows ({tokens['total_tokens']} tokens spent)")
    return "\n".join(lines)


def format_comparison(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Two runs' funnels side by side (``synth regate``): kept, drops per stage and reason, tokens."""
    lines = [f"{'':<40}{'old':>10}{'new':>10}"]
    lines.append(f"{'rows generated':<40}{old.get('rows_in', 0):>10}{new.get('rows_in', 0):>10}")
    lines.append(f"{'rows kept':<40}{old.get('rows_out', 0):>10}{new.get('rows_out', 0):>10}")
    old_stages, new_stages = old.get("stages", {}), new.get("stages", {})
    for stage in list(dict.fromkeys([*old_stages, *new_stages])):
        before, after = old_stages.get(stage, {}), new_stages.get(stage, {})
        for key in sorted(k for k in {*before, *after} if k.startswith("dropped_")):
            name = f"dropped at {stage}: {key.removeprefix('dropped_')}"
            lines.append(f"{name:<40}{before.get(key, 0):>10}{after.get(key, 0):>10}")
    old_tokens, new_tokens = old.get("tokens", {}), new.get("tokens", {})
    for key, label in (
        ("requests", "engine requests"),
        ("computed_tokens", "computed tokens"),
        ("reply_cache_hits", "replies from the reply cache"),
        ("engine_seconds", "engine seconds"),
    ):
        lines.append(f"{label:<40}{old_tokens.get(key, 0):>10g}{new_tokens.get(key, 0):>10g}")
    return "\n".join(lines)
