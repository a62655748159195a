"""Compressed corpus files (``.gz``, ``.bz2``, ``.xz``, ``.zst``): streamed, read by one task whole.

A compressed stream cannot be entered at a byte offset, so such a file is one block: a corpus
of many compressed files still spreads over the tasks file by file (the block plan deals whole
files), but one large compressed file is read by one task. Decompression is streamed: memory
holds a buffer, never the file. What is counted under ``bytes_read`` is the compressed bytes
fetched, so a remote file is read once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections import Counter
from collections.abc import Iterator

from .base import CorpusError, CountingFile

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def split_suffixes(name: str) -> tuple[str, str | None]:
    """``corpus.jsonl.gz`` -> (".jsonl", ".gz"); ``collection.tsv`` -> (".tsv", None)."""
    base = name.rsplit("/", 1)[-1].lower()
    compression = next((c for c in COMPRESSIONS if base.endswith(c)), None)
    if compression:
        base = base[: -len(compression)]
    suffix = "." + base.rsplit(".", 1)[1] if "." in base.lstrip(".") else ""
    return suffix, compression


def open_decompressed(path: str, compression: str, counts: Counter) -> io.BufferedIOBase:
    """A binary stream of the file's decompressed bytes; the compressed bytes read are counted."""
    raw = CountingFile(path, counts)
    if compression == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == ".bz2":
        return bz2.BZ2File(raw, mode="rb")
    if compression == ".xz":
        return lzma.LZMAFile(raw, mode="rb")
    if compression == ".zst":
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20)
    raise ValueError(f"unknown compression {compression!r}")


class _ZstdStream(io.RawIOBase):
    """Zstandard frames one after another, decompressed as read; a last frame cut short raises EOFError.

    (zstandard's own stream reader ends quietly at a cut-off frame; a corpus cut short must not.)
    """

    def __init__(self, raw: io.RawIOBase):
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._fed = False  # some bytes of the current frame went in

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            piece = self._raw.read(1 << 20)
            if not piece:
                if self._fed and not self._frame.eof:
                    raise EOFError("the last zstd frame ends early")
                return 0
            while piece:
                if self._frame.eof:  # the next frame begins
                    self._frame = self._zstd.ZstdDecompressor().decompressobj()
                    self._fed = False
                self._pending += self._frame.decompress(piece)
                self._fed = True
                piece = self._frame.unused_data if self._frame.eof else b""
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


def numbered_lines(path: str, compression: str, counts: Counter) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a compressed text file; a stream cut short or corrupt is a CorpusError."""
    number = 0
    try:
        with open_decompressed(path, compression, counts) as stream:
            for number, line in enumerate(stream, start=1):  # noqa: B007 - read after the loop
                yield number, line
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise CorpusError(
            f"{path}: the compressed file is cut short or damaged after line {number} ({_reason(exc)}): "
            "was it fully written?"
        ) from None
    except Exception as exc:  # zstandard's own ZstdError: a damaged frame
        if type(exc).__name__ != "ZstdError":
            raise
        raise CorpusError(
            f"{path}: the compressed file is damaged after line {number} ({_reason(exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
