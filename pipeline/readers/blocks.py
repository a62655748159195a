"""The block plan: which task reads which blocks of the input, and nothing else.

``open_corpus`` turns the configured sources into readers (one per file or
dataset) and their blocks, about four per task; the blocks are dealt to the tasks
largest first, each to the task with the fewest bytes so far, so tasks end up
about equally large even when files are not (datatrove deals files round-robin,
``files[rank::world_size]``, which leaves a task with one small file beside one
with a big one). A task reads its blocks in corpus order. The plan depends only
on the input's metadata and the config, so every executor, every rank and every
resumed run agree on which task reads what.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path, PurePosixPath

from .. import storage
from ..config import CorpusConfig
from .base import Block, CorpusError, RawRow, Reader, SkipCounts
from .code import file_reader as code_file_reader
from .code import tree_readers
from .compressed import split_suffixes
from .delimited import DelimitedReader
from .hf import HFReader
from .jsonarray import JsonArrayReader, starts_with_array
from .jsonl import JsonlReader
from .parquet import ParquetReader
from .text import TextReader

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
DELIMITERS = {".tsv": "\t", ".csv": ","}
FORMATS = ".jsonl, .json, .tsv, .csv (each also .gz, .bz2, .xz or .zst), .parquet, .txt"
log = logging.getLogger(__name__)
MIN_BLOCK_BYTES = 1024  # below this a block costs more in seeks than it spreads work
BLOCKS_PER_TASK = 4  # enough pieces to even the tasks out, few enough to read in long runs


class Corpus:
    """The run's input: readers in a fixed order, and the blocks each task owns."""

    def __init__(self, readers: list[Reader]):
        self.readers = readers
        self._by_source = {reader.source: reader for reader in readers}
        self._dealt: dict[int, list[list[int]]] = {}

    @cached_property
    def blocks(self) -> list[Block]:
        return [block for reader in self.readers for block in reader.blocks()]

    def blocks_of(self, task: int, num_tasks: int) -> list[Block]:
        """Task ``task``'s blocks, in corpus order."""
        return [self.blocks[i] for i in self._deal(num_tasks)[task]]

    def _deal(self, num_tasks: int) -> list[list[int]]:
        """Block indices per task: largest block first, each to the least-loaded task (ties: lowest)."""
        if num_tasks not in self._dealt:
            loads = [(0, task) for task in range(num_tasks)]
            owned: list[list[int]] = [[] for _ in range(num_tasks)]
            for index in sorted(range(len(self.blocks)), key=lambda i: (-self.blocks[i].size, i)):
                load, task = heapq.heappop(loads)
                owned[task].append(index)
                heapq.heappush(loads, (load + self.blocks[index].size, task))
            self._dealt[num_tasks] = [sorted(indices) for indices in owned]
        return self._dealt[num_tasks]

    def identity(self, num_tasks: int) -> dict:
        """The input's identity (every file's size and modification time) and its block plan's digest."""
        plan = [[str(b) for b in self.blocks_of(task, num_tasks)] for task in range(num_tasks)]
        digest = hashlib.sha256(json.dumps(plan).encode()).hexdigest()[:16]
        return {"files": [reader.identity() for reader in self.readers], "blocks": digest}

    def read(self, task: int = 0, num_tasks: int = 1, counts: Counter | None = None) -> Iterator[RawRow]:
        """The rows of task ``task``'s blocks, in block order; bytes read go to ``counts``."""
        counts = Counter() if counts is None else counts
        for block in self.blocks_of(task, num_tasks):
            counts["blocks_read"] += 1
            yield from self._by_source[block.source].rows(block, counts)


def corpus_readers(source: str, config: CorpusConfig, code: bool = False) -> list[Reader]:
    """The readers of one corpus path (file, folder or saved dataset) or Hub dataset name.

    ``code``: read a folder as a source tree (``pipeline/readers/code.py``).
    """
    return _readers_of(source, config, code)


def _readers_of(source: str, config: CorpusConfig, code: bool = False) -> list[Reader]:
    if storage.is_url(source):
        return _remote_readers(source, config, code)
    path = Path(source)
    if code and path.is_dir():
        readers = tree_readers(source)
        if len(readers) == 1:  # the skip counts alone
            raise CorpusError(f"{path}: no source or documentation files in this folder")
        return readers
    if code and path.is_file() and (reader := code_file_reader(source)) is not None:
        return [reader]
    if path.is_file():
        return [_file_reader(path, path.parent, config, strict=True)]  # a binary file given alone: an error
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return [HFReader(source, config.hf_split, config.block_bytes)]
        # hidden files and folders inside the corpus are skipped; the path given may itself be one
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        return _folder_readers(str(path), [(str(p), None) for p in files], config)
    if source.startswith((".", "/")) or split_suffixes(source)[0] in JSONL_SUFFIXES | {".parquet", ".txt"}:
        raise CorpusError(f"{source}: no such file or folder")
    return [HFReader(source, config.hf_split, config.block_bytes)]


def _remote_readers(source: str, config: CorpusConfig, code: bool = False) -> list[Reader]:
    """A file or a folder of files at a URL (``s3://``, ``hf://datasets/...``): one listing, no download.

    The folder is listed once (names and sizes); each file is then read block by block
    with range requests, like a local one.
    """
    try:
        files = storage.list_files(source)
    except FileNotFoundError:
        raise CorpusError(f"{storage.redact(source)}: no such file or folder") from None
    if len(files) == 1 and files[0][0] == source.rstrip("/"):
        path, size = files[0]
        if code and (reader := code_file_reader(path, size)) is not None:
            return [reader]
        return [_file_reader(path, source, config, strict=True, size=size)]
    if code:
        readers = tree_readers(source, files)
        if len(readers) == 1:
            raise CorpusError(f"{storage.redact(source)}: no source or documentation files in this folder")
        return readers
    return _folder_readers(source, files, config)


def _folder_readers(folder: str, files: list[tuple[str, int | None]], config: CorpusConfig) -> list[Reader]:
    """A reader per corpus file of a folder; the other files are counted by type (``SkipCounts``)."""
    readers: list[Reader] = []
    skipped: Counter = Counter()
    for path, size in files:
        reader = _file_reader(path, folder, config, strict=False, size=size)
        if reader is None:
            skipped[_kind(path)] += 1
        else:
            readers.append(reader)
    if not readers:
        found = f"; found {_kinds(skipped)}" if skipped else ""
        raise CorpusError(f"{storage.redact(folder)}: no corpus files in this folder ({FORMATS}){found}")
    if skipped:
        log.warning(
            "%s: %s not read (not a corpus format: %s)", storage.redact(folder), _kinds(skipped), FORMATS
        )
        readers.append(SkipCounts(folder, Counter({f"skipped_files_{k}": n for k, n in skipped.items()})))
    return readers


PACKED = {".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z", ".br", ".snappy", ".tgz"}


def _kind(path: str) -> str:
    """A file's type as its name says it: ``.arrow``, ``.jsonl.lz4`` (a packed file: both suffixes)."""
    suffixes = PurePosixPath(path.rsplit("/", 1)[-1]).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in PACKED:
        return "".join(suffixes[-2:]).lower()
    return suffixes[-1].lower() if suffixes else "(no extension)"


def _kinds(skipped: Counter) -> str:
    return ", ".join(f"{count} {kind} file(s)" for kind, count in sorted(skipped.items()))


def _file_reader(
    path: Path | str, root: Path | str, config: CorpusConfig, strict: bool, size: int | None = None
) -> Reader | None:
    suffix, compression = split_suffixes(str(path))
    if suffix == ".json" and starts_with_array(str(path), compression):
        return JsonArrayReader(str(path), size=size, compression=compression)
    if suffix in JSONL_SUFFIXES:
        return JsonlReader(str(path), config.block_bytes, size=size, compression=compression)
    if suffix in DELIMITERS:
        fields = {config.id_field, config.text_field, config.title_field, config.language_field} - {None}
        return DelimitedReader(
            str(path), DELIMITERS[suffix], config.block_bytes, fields, compression=compression, size=size
        )
    if suffix == ".parquet" and compression is None:
        return ParquetReader(str(path))
    if suffix == ".txt" and compression is None:
        return TextReader(str(path), str(root), skip_binary=not strict, size=size)
    if strict:
        shown = suffix + (compression or "")
        raise CorpusError(f"{path}: unsupported file type {shown!r} (use {FORMATS} or a folder)")
    return None  # a README or a checksum file beside the data


def open_corpus(sources: list[str], config: CorpusConfig, num_tasks: int = 1, code: bool = False) -> Corpus:
    """Readers for ``sources`` with blocks small enough that ``num_tasks`` tasks all get work.

    Files that split by bytes (JSONL, saved datasets) are cut into blocks of at most
    ``corpus.block_bytes``, and of at most 1/(4 num_tasks) of their total size, so
    a small corpus still spreads over every task; Parquet splits at its row groups,
    a text file (and a source file, with ``code``) is one block.
    """
    readers = [reader for source in sources for reader in _readers_of(source, config, code)]
    whole = [r for r in readers if getattr(r, "compression", None)]
    if whole and len(whole) < num_tasks:
        log.warning(
            "%d compressed corpus file(s) for %d tasks: a compressed file cannot be split by bytes, so "
            "each is read whole by one task; split it into more files (or decompress it) to spread it",
            len(whole),
            num_tasks,
        )
    splittable = [r for r in readers if isinstance(r, HFReader) or getattr(r, "splittable", False)]
    if splittable:
        total = sum(r.size() for r in splittable)
        size = min(config.block_bytes, max(MIN_BLOCK_BYTES, -(-total // (BLOCKS_PER_TASK * num_tasks))))
        for reader in splittable:
            reader.block_bytes = size
    return Corpus(readers)
