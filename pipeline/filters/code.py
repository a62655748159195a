"""Step: code the model wrote must parse in its language, or it teaches nothing.

A code_translation row whose translation does not parse is dropped as
``code_does_not_parse`` (the grammar's first bad line in the detail); a near-miss
translation or an LLM-written code_search negative that does not parse is removed from
the row (counted): a negative that a compiler rejects is told apart by its syntax alone.
Parsing is tree-sitter's, and ``compile()`` for Python (``pipeline/code/check.py``).
"""

from __future__ import annotations

from .. import schema as S
from ..code.check import parse_error
from ..step import Dropped, Row, Step, StepResult


class CodeParses(Step):
    name = "code_parses"
    task_types = frozenset({"code_translation", "code_search"})

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for row in rows:
            if row[S.TASK_TYPE] == "code_translation":
                language = row[S.TARGET_PROGRAMMING_LANGUAGE]
                error = parse_error(row[S.POSITIVE], language)
                if error:
                    result.dropped.append(
                        Dropped(
                            row,
                            "code_does_not_parse",
                            detail=f"translation into {language}: {error}",
                            raw_output=row[S.POSITIVE],
                        )
                    )
                    continue
                kept = [text for text in row[S.NEGATIVES] if parse_error(text, language) is None]
                result.events["near_misses_removed_not_parsing"] += len(row[S.NEGATIVES]) - len(kept)
                row[S.NEGATIVES], row[S.NEGATIVE_SOURCES] = kept, ["llm"] * len(kept)
            else:
                language = row[S.PROGRAMMING_LANGUAGE]
                written = row.get(S.WORK_LLM_NEGATIVES) or []
                kept = [text for text in written if parse_error(text, language) is None]
                result.events["negatives_removed_not_parsing"] += len(written) - len(kept)
                row[S.WORK_LLM_NEGATIVES] = kept
            result.kept.append(row)
        return result
