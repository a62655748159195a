"""The starting rows of a passage: one per configured task type, each with its seeded language draw."""

from __future__ import annotations

import hashlib

from .. import schema as S
from ..config import RunConfig
from ..readers.passages import Passage
from ..step import Row
from . import sampling


def new_row(passage: Passage, config: RunConfig, task: str = "retrieval") -> Row:
    """The starting row of one task type for one passage, with its seeded language draw.

    For bitext the drawn language is the translation's (``target_language``) and
    the query, a sentence of the passage, is in the passage's language.
    """
    generation = config.generation
    target = None
    if task == "bitext":
        language = passage.language
        target = sampling.bitext_target(generation, config.seed, passage.passage_id, passage.language)
    else:
        language = sampling.query_language(generation, config.seed, passage.passage_id, task)
    key = f"{passage.passage_id}\x1f{task}\x1f{language}\x1f{target or ''}"
    return {
        S.ID: hashlib.sha256(key.encode()).hexdigest()[:16],
        S.POSITIVE: passage.text,
        S.TASK_TYPE: task,
        S.LANGUAGE: language,
        S.PASSAGE_LANGUAGE: passage.language,
        S.TARGET_LANGUAGE: target,
        S.SOURCE_ID: passage.source_id,
        S.PASSAGE_ID: passage.passage_id,
        S.TITLE: passage.title,
        S.NEGATIVES: [],
    }


def new_rows(passage: Passage, config: RunConfig) -> list[Row]:
    """One row per configured task type."""
    return [new_row(passage, config, task) for task in config.generation.tasks]
