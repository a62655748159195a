"""The starting rows of a passage: one per configured task type that applies to it.

Which task types apply depends on what the passage is: prose (``text``), a code unit
(``code``), a documentation section (``doc``), or a domain seed (``seed``). A code unit gives
code_search and code_translation rows, and a code_docs row when it has a docstring; a doc
section gives code_docs rows and the prose types'; a seed gives domain rows. A task type that
does not apply is counted (``not_applicable_<type>``), never silently missing.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from .. import schema as S
from ..config import RunConfig
from ..readers.passages import Passage
from ..step import Row
from . import sampling

PROSE_TYPES = ("retrieval", "bitext", "classification", "sts")
PAIRS_MODEL = "pairs"  # the model column of a row whose query came from --pairs: no model wrote it
APPLIES = {
    **{task: {"text", "doc"} for task in PROSE_TYPES},
    "retrieval": {"text", "doc", "pair"},  # a pair (--pairs) brings its own query
    "code_search": {"code"},
    "code_translation": {"code"},
    "code_docs": {"doc", "code"},  # a code unit only with a docstring
    "domain": {"seed"},
}
CODE_COLUMNS = {  # Passage.meta key -> row column
    "programming_language": S.PROGRAMMING_LANGUAGE,
    "symbol": S.SYMBOL,
    "path": S.CODE_PATH,
    "signature": S.SIGNATURE,
    "domain": S.DOMAIN,
}


def applies(task: str, passage: Passage) -> bool:
    if passage.kind not in APPLIES[task]:
        return False
    return not (task == "code_docs" and passage.kind == "code" and not passage.meta.get("docstring"))


def new_row(passage: Passage, config: RunConfig, task: str = "retrieval") -> Row:
    """The starting row of one task type for one passage, with its seeded language draw.

    For bitext the drawn language is the translation's (``target_language``) and the query,
    a sentence of the passage, is in the passage's language. A code_translation row's query is
    the code itself: its language columns hold the code's comment language, and the drawn
    target is a programming language. A domain row's document is written in its query language.
    """
    generation = config.generation
    target = None
    if task in ("bitext", "code_translation"):
        language = passage.language
        if task == "bitext":
            target = sampling.bitext_target(generation, config.seed, passage.passage_id, passage.language)
    else:
        language = sampling.query_language(generation, config.seed, passage.passage_id, task)
    key = f"{passage.passage_id}\x1f{task}\x1f{language}\x1f{target or ''}"
    row = {
        S.ID: hashlib.sha256(key.encode()).hexdigest()[:16],
        S.POSITIVE: passage.text,
        S.TASK_TYPE: task,
        S.LANGUAGE: language,
        S.PASSAGE_LANGUAGE: passage.language or language,
        S.TARGET_LANGUAGE: target,
        S.SOURCE_ID: passage.source_id,
        S.PASSAGE_ID: passage.passage_id,
        S.TITLE: passage.title,
        S.NEGATIVES: [],
    }
    if passage.kind == "pair":  # the user's query; the language it says it is in, else the drawn one
        row[S.QUERY] = passage.meta["query"]
        row[S.LANGUAGE] = row[S.PASSAGE_LANGUAGE] = passage.language or language
        row[S.WORK_PAIR] = passage.meta["where"]
        row[S.MODEL] = PAIRS_MODEL
        if not passage.text:
            row[S.PASSAGE_ID] = ""  # the pair_positive step picks the document's passage
    for key_name, column in CODE_COLUMNS.items():
        if passage.meta.get(key_name):
            row[column] = passage.meta[key_name]
    if passage.kind == "code":
        row[S.WORK_CODE] = passage.text
        row[S.WORK_DOCSTRING] = passage.meta.get("docstring", "")
        if task == "code_search":
            row[S.POSITIVE] = passage.meta.get("body") or passage.text  # CodeSearchNet: no docstring
        elif task == "code_docs":
            row[S.POSITIVE] = f"{passage.meta.get('signature', '')}\n{passage.meta['docstring']}".strip()
        elif task == "code_translation":
            row[S.QUERY] = passage.text
            row[S.TARGET_PROGRAMMING_LANGUAGE] = sampling.code_target(
                generation, config.seed, passage.passage_id, passage.meta["programming_language"]
            )
    return row


def new_rows(passage: Passage, config: RunConfig, counts: Counter | None = None) -> list[Row]:
    """One row per configured task type that applies to the passage; the others go to ``counts``."""
    rows = []
    for task in config.generation.tasks:
        if applies(task, passage):
            rows.append(new_row(passage, config, task))
        elif counts is not None:
            counts[f"not_applicable_{task}"] += 1
    return rows
