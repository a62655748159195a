"""The English task instruction stored with every row, for the query side of embedding training.

Qwen3-Embedding formats a query as ``Instruct: {instruction}\\nQuery:{query}``;
the instruction names the task (and, across languages, both languages) so one
model can serve retrieval, bitext mining, classification and STS.
"""

from __future__ import annotations

from . import schema as S
from .langid import language_name


def instruction(row: dict) -> str:
    task = row[S.TASK_TYPE]
    query_lang, passage_lang = row[S.LANGUAGE], row[S.PASSAGE_LANGUAGE]
    if task == "retrieval":
        if query_lang != passage_lang:
            return (
                f"Given a search query in {language_name(query_lang)}, retrieve relevant passages in "
                f"{language_name(passage_lang)} that answer the query"
            )
        return "Given a search query, retrieve relevant passages that answer the query"
    if task == "bitext":
        return (
            f"Given a sentence in {language_name(query_lang)}, retrieve its translation in "
            f"{language_name(row[S.TARGET_LANGUAGE])}"
        )
    if task == "classification":
        return "Given a text, retrieve the description of the category it belongs to"
    if task == "sts":
        return "Retrieve sentences that are semantically similar to the given sentence"
    if task == "code_search":
        language = row.get(S.PROGRAMMING_LANGUAGE)
        snippets = f"{_display(language)} code snippets" if language else "code snippets"
        return f"Given a developer's question, retrieve {snippets} that answer it"
    if task == "code_docs":
        return "Given a developer's question, retrieve the documentation section that answers it"
    if task == "code_translation":
        return (
            f"Given a code snippet in {_display(row.get(S.PROGRAMMING_LANGUAGE))}, retrieve the code that "
            f"does the same in {_display(row.get(S.TARGET_PROGRAMMING_LANGUAGE))}"
        )
    if task == "domain":
        return f"Given a {row.get(S.DOMAIN)} search query, retrieve documents that answer it"
    raise ValueError(f"no instruction for task type {task!r}")


DISPLAY = {"cpp": "C++", "c": "C", "javascript": "JavaScript", "typescript": "TypeScript", "tsx": "TSX"}


def _display(language: str | None) -> str:
    """A programming language as people write it (``cpp`` -> C++)."""
    if not language:
        return "the source language"
    return DISPLAY.get(language, language.capitalize())


def format_query(query: str, instruction: str | None) -> str:
    """The query side of an embedding model's input: ``Instruct: ...\nQuery:...``, or the bare query."""
    return f"Instruct: {instruction}\nQuery:{query}" if instruction else query
