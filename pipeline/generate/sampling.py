"""Every random choice of a run, drawn from the config's explicit distributions.

Each draw depends only on the run seed, the row id and what is drawn, never on
batch order or on other rows: a resumed, re-sharded or distributed run draws the
same language, question type, difficulty, length and STS score for the same row.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..step import row_rng


def weighted_choice(weights: dict, seed: int, *keys: str):
    """One key of ``weights`` drawn in proportion to its weight, seeded by ``keys``."""
    options = list(weights)
    return row_rng(seed, *keys).choices(options, weights=[weights[o] for o in options], k=1)[0]


def query_language(config: GenerationConfig, seed: int, passage_id: str, task: str) -> str:
    return weighted_choice(config.languages, seed, passage_id, task, "language")


def bitext_target(config: GenerationConfig, seed: int, passage_id: str, passage_language: str) -> str | None:
    """Target language of a bitext row: a query language other than the passage's, or None."""
    others = {k: w for k, w in config.languages.items() if k != passage_language and w > 0}
    if not others:
        return None
    return weighted_choice(others, seed, passage_id, "bitext", "target")


def question_type(config: GenerationConfig, seed: int, row_id: str) -> str:
    return weighted_choice(config.question_types, seed, row_id, "question_type")


def difficulty(config: GenerationConfig, seed: int, row_id: str) -> str:
    return weighted_choice(config.difficulties, seed, row_id, "difficulty")


def length_words(config: GenerationConfig, seed: int, row_id: str) -> int:
    return weighted_choice(config.query_length_words, seed, row_id, "length")


def sts_score(config: GenerationConfig, seed: int, row_id: str) -> int:
    return weighted_choice(config.sts_scores, seed, row_id, "sts_score")


def pick(items: list, seed: int, *keys: str):
    """One item, uniformly, seeded by ``keys`` (e.g. the sentence of a passage to translate)."""
    return row_rng(seed, *keys).choice(items)


def draw_question(row: dict, config: GenerationConfig, seed: int) -> None:
    """Set the row's question type and difficulty by seeded draw (instead of the LLM choosing them)."""
    row[S.QUESTION_TYPE] = question_type(config, seed, row[S.ID])
    row[S.DIFFICULTY] = difficulty(config, seed, row[S.ID])


def code_question_type(config: GenerationConfig, seed: int, row_id: str) -> str:
    return weighted_choice(config.code_question_types, seed, row_id, "code_question_type")


def code_target(config: GenerationConfig, seed: int, passage_id: str, source: str) -> str | None:
    """The programming language a code_translation row is written in: a target other than ``source``."""
    others = {k: w for k, w in config.code_targets.items() if k != source and w > 0}
    if not others:
        return None
    return weighted_choice(others, seed, passage_id, "code_target")
