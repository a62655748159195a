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

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .. import storage
from ..code.grammars import grammar_for
from ..code.tree import LOCK_FILES, VENDORED, file_units
from ..code.units import CodeUnit
from .base import Block, RawRow, Reader, SkipCounts, WholeFileReader

DOC_SUFFIXES = (".md", ".markdown", ".rst")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+\S")
_FENCE = re.compile(r"^\s*(```|~~~)")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def is_doc(name: str) -> bool:
    return name.lower().endswith(DOC_SUFFIXES)


def source_files(root: str | Path, counts: Counter) -> Iterator[Path]:
    """Every file under ``root`` outside vendored, build and hidden folders, in name order."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    for folder, subfolders, files in os.walk(root):
        kept = []
        for name in sorted(subfolders):
            if name.startswith(".") or name in VENDORED or name.endswith(".egg-info"):
                counts["skipped_vendored_folder"] += 1
            else:
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def iter_code_units(root: str | Path, counts: Counter | None = None) -> Iterator[CodeUnit]:
    """The functions, methods and classes of every source file under ``root``; skips go to ``counts``.

    A unit's ``path`` is relative to ``root`` (the file's own name when ``root`` is a file).
    """
    counts = Counter() if counts is None else counts
    base = Path(root)
    for path in source_files(base, counts):
        name = path.name if base.is_file() else path.relative_to(base).as_posix()
        yield from file_units(name, path.read_bytes, counts)


class SourceFileReader(WholeFileReader):
    """One source file: its code units as rows."""

    def __init__(self, path: str, relative: str, size: int | None = None):
        super().__init__(path, size)
        self.relative = relative  # the path inside the tree, as rows and ids name it

    def rows(self, block: Block, counts: Counter) -> Iterator[RawRow]:
        for unit in file_units(self.relative, lambda: storage.read_bytes(self.source), counts):
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
