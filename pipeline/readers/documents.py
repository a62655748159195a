"""Raw rows to documents: the id, text, title and language fields, and the rules for bad rows.

The readers hand out raw rows of a task's blocks; ``documents`` checks each row
(the field rules of the README's corpus table) and turns it into a ``Document``.
Every skip is counted in ``ReadStats``; ``passages.py`` cuts documents into passages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import CorpusConfig
from .base import ID_FIELDS, TEXT_FIELDS, TITLE_FIELDS, CorpusError, RawRow

__all__ = ["CorpusError", "Document", "ReadStats", "documents", "iter_documents"]

CODE_FIELDS = ("code", "func_code_string", "original_string")  # a row holding code instead of text
LANGUAGE_FIELDS = ("language", "lang")
# what a code row may carry beside its code (the source-tree reader sets them all), and a domain seed
META_FIELDS = ("programming_language", "symbol", "path", "signature", "docstring", "body", "domain")


@dataclass
class Document:
    id: str
    text: str
    title: str | None
    language: str | None
    where: Any  # formats as "file:line" / "file:row N" for error messages
    kind: str = "text"  # "text", "code" (a code unit), "doc" (a documentation section), "seed" (domain)
    meta: dict[str, str] = field(default_factory=dict)  # META_FIELDS the row had


@dataclass
class ReadStats:
    counts: Counter = field(default_factory=Counter)


def sample_corpus_path(language: str) -> Path:
    """The small corpus shipped in the package (``en`` or ``zh``; other languages fall back to ``en``)."""
    base = resources.files("pipeline") / "sample_corpus"
    path = Path(str(base / f"{language}.jsonl"))
    return path if path.exists() else Path(str(base / "en.jsonl"))


def _pick(row: dict[str, Any], configured: str | None, candidates: tuple[str, ...]) -> str | None:
    if configured:
        return configured
    return next((name for name in candidates if name in row), None)


def sample_corpus_paths(languages: Iterable[str]) -> list[Path]:
    """The packaged sample corpora of these languages, each once, in order."""
    return list(dict.fromkeys(sample_corpus_path(language) for language in languages))


def iter_documents(
    config: CorpusConfig, default_path: Path | list[Path], stats: ReadStats
) -> Iterator[Document]:
    """Every document of the corpus in order (one task over all blocks); see ``documents``.

    ``default_path`` (one path, or several read one after another) is read when the
    config names no corpus.
    """
    from .blocks import open_corpus

    defaults = default_path if isinstance(default_path, list) else [default_path]
    sources = [config.path] if config.path else [str(p) for p in defaults]
    return documents(open_corpus(sources, config).read(counts=stats.counts), config, stats)


def documents(
    rows: Iterable[RawRow], config: CorpusConfig, stats: ReadStats, seen_ids: dict[str, object] | None = None
) -> Iterator[Document]:
    """Documents with id, title, text and (given or per-row) language; empty ones skipped and counted.

    An id seen before in this stream is skipped and counted (``skipped_duplicate_id``): a task
    remembers the ids of its own blocks only, so memory follows the task, not the corpus. With
    ``seen_ids`` (the first look before a run), a repeated id stops the run, naming both rows.
    """
    strict = seen_ids is not None
    seen: dict[str, object] | set[str] = seen_ids if strict else set()
    for where, row in rows:
        stats.counts["documents_read"] += 1
        text_key, text = _text(row, where, config)
        id_key = _id_key(row, where, config)
        doc_id = str(row[id_key])
        if doc_id in seen:
            if strict:
                raise CorpusError(
                    f"{where}: field {id_key!r}: id {doc_id!r} was already used at {seen[doc_id]}; "
                    "document ids must be unique"
                )
            stats.counts["skipped_duplicate_id"] += 1
            continue
        if strict:
            seen[doc_id] = where  # formatted only if reported: a JSONL line number costs a scan
        else:
            seen.add(doc_id)
        title_key = _pick(row, config.title_field, TITLE_FIELDS)
        language_key = _pick(row, config.language_field, LANGUAGE_FIELDS)
        if not text.strip():
            stats.counts["skipped_empty_document"] += 1
            continue
        if len(text) > config.max_document_chars:
            stats.counts["truncated_huge_document"] += 1
            text = text[: config.max_document_chars]
        title = row.get(title_key) if title_key else None
        language = config.language or (row.get(language_key) if language_key else None)
        kind = str(row.get("kind") or ("code" if text_key in CODE_FIELDS else "text"))
        # only code, doc sections and seeds carry them: a prose corpus's own columns stay its own
        meta = {}
        if kind != "text":
            meta = {name: str(row[name]) for name in META_FIELDS if row.get(name) not in (None, "")}
        if kind == "code":
            language = _code_row_languages(row, meta, where, config)
        yield Document(
            id=str(row[id_key]),
            text=text,
            title=str(title) if title else (meta.get("symbol")),
            language=str(language) if language else None,
            where=where,
            kind=kind,
            meta=meta,
        )


def _text(row: dict, where, config: CorpusConfig) -> tuple[str, str]:
    """The row's text column (the configured one, else a usual name) and its text ("" for null)."""
    text_key = _pick(row, config.text_field, TEXT_FIELDS) or _pick(row, None, CODE_FIELDS)
    if text_key is None or text_key not in row:
        wanted = config.text_field or " or ".join(TEXT_FIELDS + CODE_FIELDS)
        raise CorpusError(f"{where}: missing text field ({wanted}); name it with corpus.text_field")
    text = row[text_key]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_key!r} must be a string, got {type(text).__name__}")
    return text_key, text


def _id_key(row: dict, where, config: CorpusConfig) -> str:
    """The row's id column, which must hold a value."""
    id_key = _pick(row, config.id_field, ID_FIELDS)
    if id_key is None or row.get(id_key) in (None, ""):
        raise CorpusError(
            f"{where}: missing id field ({config.id_field or ' or '.join(ID_FIELDS)}); "
            "name it with corpus.id_field"
        )
    return id_key


def _code_row_languages(row: dict, meta: dict[str, str], where, config: CorpusConfig) -> str | None:
    """A code row's programming language (into ``meta``) and natural language (returned).

    Code datasets (CodeSearchNet and the like) name the programming language ``language``:
    a value the code reader has a grammar for is taken as that, never as a natural language.
    """
    from ..code.grammars import BY_NAME

    declared = row.get("language") if isinstance(row.get("language"), str) else None
    if "programming_language" not in meta and declared and declared.lower() in BY_NAME:
        meta["programming_language"] = declared.lower()
        declared = None
    if meta.get("programming_language", "").lower() not in BY_NAME:
        known = ", ".join(sorted(BY_NAME))
        raise CorpusError(
            f"{where}: field 'programming_language': a code row needs one of {known}, "
            f"got {meta.get('programming_language')!r}"
        )
    meta["programming_language"] = meta["programming_language"].lower()
    natural = row.get("natural_language")
    return config.language or (str(natural) if natural else declared)


@dataclass
class Passage:
    """A document's piece that becomes rows (cut by ``readers/passages.py``), or one pair of the
    user's (``readers/pairs.py``)."""

    passage_id: str
    source_id: str
    title: str | None
    text: str
    language: str  # natural language ("" for a domain seed: each row draws its own)
    kind: str = "text"  # "text", "code", "doc" or "seed", as the document's (readers/documents.py)
    meta: dict[str, str] = field(default_factory=dict)  # the document's code or domain fields
