"""Reading documents and cutting them into passages.

The readers (``pipeline/readers``) hand out raw rows of a task's blocks; this
module turns them into documents, then passages under the token budget, each
with a language. Reading is lazy, so a malformed row deep in a corpus stops the
run only after every shard before it has been written. Every skip is counted
in ``ReadStats``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .config import CorpusConfig
from .langid import detect_language
from .readers.base import CorpusError, RawRow

__all__ = ["CorpusError", "Document", "Passage", "ReadStats", "documents", "iter_documents", "iter_passages"]

ID_FIELDS = ("id", "_id", "doc_id", "docid")
TEXT_FIELDS = ("text", "content", "contents", "passage", "body")
TITLE_FIELDS = ("title",)
LANGUAGE_FIELDS = ("language", "lang")


@dataclass
class Document:
    id: str
    text: str
    title: str | None
    language: str | None
    where: Any  # formats as "file:line" / "file:row N" for error messages


@dataclass
class Passage:
    passage_id: str
    source_id: str
    title: str | None
    text: str
    language: str


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
    from .readers import open_corpus

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
        text_key = _pick(row, config.text_field, TEXT_FIELDS)
        if text_key is None or text_key not in row:
            wanted = config.text_field or " or ".join(TEXT_FIELDS)
            raise CorpusError(f"{where}: missing text field ({wanted}); name it with corpus.text_field")
        text = row[text_key]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise CorpusError(f"{where}: field {text_key!r} must be a string, got {type(text).__name__}")
        id_key = _pick(row, config.id_field, ID_FIELDS)
        if id_key is None or row.get(id_key) in (None, ""):
            raise CorpusError(
                f"{where}: missing id field ({config.id_field or ' or '.join(ID_FIELDS)}); "
                "name it with corpus.id_field"
            )
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
        yield Document(
            id=str(row[id_key]),
            text=text,
            title=str(title) if title else None,
            language=str(language) if language else None,
            where=where,
        )


_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])|\n+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _hard_split(sentence: str, count_tokens: Callable[[str], int], budget: int) -> list[str]:
    # A single sentence over budget (a table row, code, a run-on line): halve until it fits.
    if count_tokens(sentence) <= budget or len(sentence) < 2:
        return [sentence]
    middle = len(sentence) // 2
    space = sentence.rfind(" ", 0, middle)
    cut = space if space > len(sentence) // 4 else middle
    return _hard_split(sentence[:cut].strip(), count_tokens, budget) + _hard_split(
        sentence[cut:].strip(), count_tokens, budget
    )


def split_passages(text: str, count_tokens: Callable[[str], int], budget: int) -> list[str]:
    """Greedy packing of whole sentences into passages of at most ``budget`` tokens."""
    if count_tokens(text) <= budget:
        return [text.strip()]
    pieces: list[str] = []
    for sentence in split_sentences(text):
        pieces.extend(_hard_split(sentence, count_tokens, budget))
    passages: list[str] = []
    current: list[str] = []
    for piece in pieces:
        candidate = _join(current + [piece])
        if current and count_tokens(candidate) > budget:
            passages.append(_join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        passages.append(_join(current))
    return passages


def _join(sentences: list[str]) -> str:
    # No space between CJK sentences, one space elsewhere.
    out = ""
    for s in sentences:
        if out and not (_is_cjk(out[-1]) and _is_cjk(s[0])):
            out += " "
        out += s
    return out


def _is_cjk(char: str) -> bool:
    return "\u3000" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef"


def iter_passages(
    documents: Iterable[Document],
    count_tokens: Callable[[str], int],
    config: CorpusConfig,
    stats: ReadStats,
) -> Iterator[Passage]:
    """Passages under the token budget, each with a language (given, per-row, or detected)."""
    for doc in documents:
        chunks = split_passages(doc.text, count_tokens, config.max_passage_tokens)
        if len(chunks) > 1:
            stats.counts["documents_split"] += 1
        for index, chunk in enumerate(chunks):
            if len(chunk.strip()) < config.min_passage_chars:
                stats.counts["skipped_short_passage"] += 1
                continue
            language = doc.language or detect_language(chunk)[0]
            stats.counts["passages"] += 1
            yield Passage(
                passage_id=f"{doc.id}#{index}",
                source_id=doc.id,
                title=doc.title,
                text=chunk,
                language=language,
            )


def mix_languages(
    passages: Iterator[Passage],
    weights: dict[str, float],
    seed: int,
    stats: ReadStats,
    buffer_limit: int = 20_000,
) -> Iterator[Passage]:
    """Interleave the passages of the listed languages in proportion to ``weights``.

    Each next passage's language is drawn with ``seed`` among the languages still
    available; passages of other languages are skipped and counted
    (``skipped_passage_language``). Reading ahead buffers passages of the languages
    not drawn yet; a language whose passages have run out (or that would need more
    than ``buffer_limit`` passages of read-ahead) leaves the draw, so a corpus
    that cannot give the asked-for mix gives what it has instead of stalling.
    The order depends only on the corpus order and the seed, so every task and
    every resumed run sees the same sequence.
    """
    import random
    from collections import deque

    rng = random.Random(seed)
    active = {k: w for k, w in weights.items() if w > 0}
    buffers: dict[str, deque[Passage]] = {k: deque() for k in active}
    exhausted = False
    while active:
        names = list(active)
        language = rng.choices(names, weights=[active[n] for n in names], k=1)[0]
        while not buffers[language] and not exhausted:
            try:
                passage = next(passages)
            except StopIteration:
                exhausted = True
                break
            if passage.language not in buffers:
                stats.counts["skipped_passage_language"] += 1
                continue
            buffers[passage.language].append(passage)
            if len(buffers[passage.language]) > buffer_limit:
                break  # the drawn language is too rare here to keep the ratio
        if buffers[language]:
            yield buffers[language].popleft()
        else:
            del active[language]
            stats.counts[f"passage_language_exhausted_{language}"] += 1
