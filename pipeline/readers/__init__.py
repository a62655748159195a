"""Reading the corpus: formats, the block plan, and the passage stream a task reads.

- ``base``: what a reader is (blocks from metadata, rows of a block, bytes counted);
- ``jsonl``, ``parquet``, ``text``, ``hf``: one reader per input format;
- ``blocks``: the corpus as readers and the blocks each task owns (``open_corpus``);
- ``documents``: raw rows to documents (id, text, title, language), every skip counted;
- ``passages``: documents to passages, the language mix and the limit (``task_passages``).
"""

from .base import Block, CorpusError, CountingFile, RawRow, Reader
from .blocks import Corpus, open_corpus
from .hf import HFReader
from .jsonl import JsonlReader
from .parquet import ParquetReader
from .text import TextReader

__all__ = [
    "Block",
    "Corpus",
    "CorpusError",
    "CountingFile",
    "HFReader",
    "JsonlReader",
    "ParquetReader",
    "RawRow",
    "Reader",
    "TextReader",
    "open_corpus",
]
