"""Source trees as a corpus: code files cut into functions, methods and classes, docs into sections.

Read when ``corpus.format`` is ``code`` (or ``auto`` with a code task type). Each source file
is one block; its rows are its code units (``pipeline/code/``: tree-sitter, qualified symbol,
signature, docstring apart), each a document whose text is the unit's code and whose id is
``path:line:symbol``. Markdown and reST files are cut into their sections (a heading and what
follows it up to the next heading) for API-documentation rows. What is not source a person
wrote is skipped and counted where the task reading it counts its reading: vendored and
hidden folders and files in no known language when the tree is listed (``SkipCounts``, one
block), lock, binary, large, generated, minified and unparsable files when a file is read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import storage
from ..code.grammars import grammar_for
from ..code.tree import LOCK_FILES, VENDORED, skip_reason, source_files
from ..code.units import CodeParseError, split_source
from .base import Block, RawRow, Reader, WholeFileReader

DOC_SUFFIXES = (".md", ".markdown", ".rst")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+\S")
_FENCE = re.compile(r"^\s*(```|~~~)")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def is_doc(name: str) -> bool:
    return name.lower().endswith(DOC_SUFFIXES)


class SkipCounts(Reader):
    """What listing a source tree skipped, counted once by the task that owns this reader's block."""

    def __init__(self, source: str, counts: Counter):
        self.source = f"{source}#skipped"
        self.counts = counts

    def size(self) -> int:
        return 0

    def blocks(self) -> list[Block]:
        return [Block(self.source)] if self.counts else []

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        counts.update(self.counts)
        return iter(())

    def identity(self) -> dict:
        return {"source": self.source, "skipped": dict(sorted(self.counts.items()))}


class SourceFileReader(WholeFileReader):
    """One source file: its code units as rows."""

    def __init__(self, path: str, relative: str, size: int | None = None):
        super().__init__(path, size)
        self.relative = relative  # the path inside the tree, as rows and ids name it

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        grammar = grammar_for(self.relative)
        data = storage.read_bytes(self.source)
        counts["bytes_read"] += len(data)
        reason = skip_reason(Path(self.relative), data)
        if reason:
            counts[reason] += 1
            return
        try:
            units, broken = split_source(self.relative, data, grammar)
        except CodeParseError:
            counts["skipped_unparsable_file"] += 1
            return
        counts["skipped_unparsable_unit"] += broken
        counts["code_files"] += 1
        counts[f"code_files_{grammar.name}"] += 1
        counts["code_units"] += len(units)
        for unit in units:
            yield (
                unit.where,
                {
                    "id": f"{unit.path}:{unit.line}:{unit.symbol}",
                    "code": unit.code,
                    "kind": "code",
                    "title": unit.symbol,
                    "programming_language": unit.language,
                    "symbol": unit.symbol,
                    "path": unit.path,
                    "signature": unit.signature,
                    "docstring": unit.docstring,
                    "body": unit.body,
                },
            )


class DocFileReader(WholeFileReader):
    """One Markdown or reST file: its sections as rows."""

    def __init__(self, path: str, relative: str, size: int | None = None):
        super().__init__(path, size)
        self.relative = relative

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        data = storage.read_bytes(self.source)
        counts["bytes_read"] += len(data)
        if b"\x00" in data[:8192]:
            counts["skipped_binary_file"] += 1
            return
        text = data.decode("utf-8-sig", errors="replace")
        split = rst_sections if self.relative.lower().endswith(".rst") else markdown_sections
        counts["doc_files"] += 1
        for number, (line, title, section) in enumerate(split(text)):
            counts["doc_sections"] += 1
            yield (
                f"{self.relative}:{line}",
                {
                    "id": f"{self.relative}#{number}",
                    "text": section,
                    "kind": "doc",
                    "title": title,
                    "path": self.relative,
                },
            )


def markdown_sections(text: str) -> list[tuple[int, str, str]]:
    """(line, heading, text) of each section; ``#`` lines inside fenced code are not headings."""
    sections, start, title, fenced = [], 0, "", False
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and _MARKDOWN_HEADING.match(line) and number > start:
            sections.append((start, title, lines[start:number]))
            start, title = number, line.lstrip("#").strip()
        elif not fenced and _MARKDOWN_HEADING.match(line):
            title = line.lstrip("#").strip()
    sections.append((start, title, lines[start:]))
    return [(s + 1, t, "\n".join(body).strip()) for s, t, body in sections if "\n".join(body).strip()]


def rst_sections(text: str) -> list[tuple[int, str, str]]:
    """(line, heading, text) of each section: a heading is a line underlined by ===, ---, ~~~ ..."""
    lines = text.splitlines()
    heads = [
        n
        for n in range(len(lines) - 1)
        if lines[n].strip()
        and _RST_UNDERLINE.match(lines[n + 1])
        and len(lines[n + 1].strip()) >= len(lines[n].strip())
    ]
    starts = [0, *[n for n in heads if n > 0]]
    sections = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        body = "\n".join(lines[start:end]).strip()
        title = lines[start].strip() if start in heads else ""
        if body:
            sections.append((start + 1, title, body))
    return sections


def tree_readers(root: str, files: list[tuple[str, int | None]] | None = None) -> list[Reader]:
    """The readers of a source tree (a local folder, or the listing of a remote one).

    ``files``: a remote folder's (path, size) listing; None: walk the local folder.
    """
    counts: Counter = Counter()
    readers: list[Reader] = []
    if files is None:
        base = Path(root)
        listed = [(str(p), p.relative_to(base).as_posix(), None) for p in source_files(base, counts)]
    else:
        prefix = root.rstrip("/") + "/"
        listed = []
        for path, size in files:
            relative = path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]
            folders = relative.split("/")[:-1]
            if any(part.startswith(".") or part in VENDORED for part in folders):
                counts["skipped_vendored_file"] += 1
                continue
            listed.append((path, relative, size))
    for path, relative, size in listed:
        name = relative.rsplit("/", 1)[-1]
        if name in LOCK_FILES:
            counts["skipped_lock_file"] += 1
        elif grammar_for(name) is not None:
            readers.append(SourceFileReader(path, relative, size))
        elif is_doc(name):
            readers.append(DocFileReader(path, relative, size))
        else:
            counts["skipped_not_source"] += 1
    return [*readers, SkipCounts(root, counts)]


def file_reader(path: str, size: int | None = None) -> Reader | None:
    """The reader of one source or doc file given on its own, or None for any other file."""
    name = str(path).rsplit("/", 1)[-1]
    if grammar_for(name) is not None:
        return SourceFileReader(str(path), name, size)
    if is_doc(name):
        return DocFileReader(str(path), name, size)
    return None
