"""Secrets never leave the process: one redaction for every text the tool writes or prints.

Three kinds of secret are recognised anywhere in a string (a message, a traceback, a command
line, a YAML file):

- the user and password of a URL (``https://user:KEY@host/v1``, ``s3://ID:SECRET@bucket``,
  ``https://TOKEN@host``);
- the value of a URL query parameter or a ``NAME=value`` pair whose name says it is a key, a
  token, a password, a signature or a credential (``?api-key=...``, ``&X-Amz-Signature=...``),
  and the token of an ``Authorization: Bearer`` header;
- the value of every environment variable that holds a secret: the known ones (``HF_TOKEN``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``OPENAI_API_KEY``, ...), any whose name
  says it is one (``*_TOKEN``, ``*_SECRET*``, ``*_PASSWORD``, ``*API_KEY*``), and the variable
  a run names for its API key (``models.api_key_env``, registered by ``register_variable``).

Where the text goes: the terminal (``RedactingStream`` around stdout and stderr, installed by
the ``synth`` entry point, and the progress-bar stream of ``console``), every log file
(``RedactingFormatter``), crash reports, and each file a run writes that holds free text
(``config.yaml``, ``manifest.json``, the card, the report, ``stats.json``). A URL that carries a
secret is refused up front (``storage.check_url``, the ``--base-url`` check in ``preflight``),
so the redaction is the second line of defence, not the first.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
SHORTEST_SECRET = 8  # shorter values ("true", "testing") would mask ordinary words; real keys are longer

KNOWN_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "OPENAI_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "WANDB_API_KEY",
)
# names that say a variable or a parameter holds a secret
_SECRET_NAME = r"(?:[\w.-]*?(?:key|token|secret|passw(?:or)?d|pwd|signature|sig|credential|auth))[\w.-]*"
_VARIABLE_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.IGNORECASE)
# ... unless the name says it holds where a secret is, or which one, not the secret itself
_NOT_A_VALUE = re.compile(r"_(PATH|FILE|DIR|ID|ENV|URL|ENDPOINT|NAME)$", re.IGNORECASE)

_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
# user:password@ or token@ right after a scheme; a password may hold "/" (AWS keys do)
_USERINFO = re.compile(rf"({_SCHEME})(?:[^/@\s'\"]*:[^@\s'\"]*|[^/@\s:'\"]+)@")
# ?api_key=VALUE, &token=VALUE, ;sig=VALUE in a URL
_QUERY = re.compile(rf"([?&;]{_SECRET_NAME}=)[^&\s#'\"]+", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}")

_registered: set[str] = set()


def register_variable(name: str | None) -> None:
    """Treat the value of environment variable ``name`` as a secret from now on (an API key's)."""
    if name:
        _registered.add(name)


def secret_values() -> list[str]:
    """The values of the secret environment variables set now, longest first."""
    values = set()
    for name, value in os.environ.items():
        if len(value) < SHORTEST_SECRET:
            continue
        named = _VARIABLE_NAME.search(name) and not _NOT_A_VALUE.search(name)
        if name in _registered or name in KNOWN_VARIABLES or named:
            values.add(value)
    return sorted(values, key=len, reverse=True)


def redact(text: Any) -> str:
    """``text`` with every secret it holds replaced by ``***`` (see the module's docstring)."""
    text = str(text)
    if not text:
        return text
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    if "://" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _QUERY.sub(rf"\1{MASK}", text)
    if "Bearer" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    return text


def redact_data(data: Any) -> Any:
    """A JSON-like value with every string in it redacted (keys stay as they are)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(value) for value in data]
    return data


def credentials_in(url: str) -> str | None:
    """What secret a URL carries ("a user and password", "a key in ?api-key="), or None."""
    text = str(url)
    if _USERINFO.search(text):
        return "a user and password"
    found = _QUERY.search(text)
    if found:
        return f"a secret in its query ({found.group(1)[1:]}...)"
    return None


class RedactingStream:
    """A text stream that redacts what it writes, line by line, before it reaches ``stream``.

    A line is held back until its newline (or a flush) so that a secret split over two
    ``write`` calls is still recognised; everything else is passed to the wrapped stream.
    """

    def __init__(self, stream):
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending or "\r" in self._pending:
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
            ready, self._pending = self._pending[:cut], self._pending[cut:]
            self._stream.write(redact(ready))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def show(text: str) -> None:
    """Print ``text`` on standard output as it is: for the one secret the user must see (the review
    page's token, printed to the terminal that started it, as notebook servers print theirs)."""
    import sys

    stream = sys.stdout._stream if isinstance(sys.stdout, RedactingStream) else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def install_on_terminal() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once) so that nothing printed shows a secret."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
