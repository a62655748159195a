"""Reading JSON Lines with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def parse_line(raw: bytes, where: object, error: type[Exception] = ValueError) -> dict[str, Any] | None:
    """One line as a JSON object; None for a blank line.

    Broken UTF-8, broken JSON and non-object lines raise ``error`` naming ``where``
    (anything that formats as "file:line"), so the caller's own error type reaches the user.
    """
    try:
        line = raw.decode("utf-8-sig")  # a byte-order mark (first line of a file) is not data
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not valid UTF-8 (byte {exc.start})") from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        cut = "" if raw.endswith(b"\n") else " (the file's last line is cut off: was it fully written?)"
        raise error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}){cut}") from None
    if not isinstance(row, dict):
        raise error(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def iter_jsonl(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ("file:line", object) for every non-blank line of a whole file."""
    from . import storage

    with storage.open_read(path) as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            row = parse_line(raw, where, error)
            if row is not None:
                yield where, row
