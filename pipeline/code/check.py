"""Whether a snippet the model wrote is code in its language, and what its identifiers say.

``parse_error`` runs the language's tree-sitter grammar over the snippet (for Python,
``compile()``, which also rejects what a grammar lets through, such as an assignment to a
literal); it returns where the snippet breaks, or None.
``identifier_words`` splits ``parseJsonFile`` and ``parse_json_file`` alike into their words,
so the copy check can tell a query that only restates a function's name.
"""

from __future__ import annotations

import re

from .grammars import BY_NAME, parser_and_query

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def known(language: str) -> bool:
    return language in BY_NAME


def parse_error(code: str, language: str) -> str | None:
    """Why ``code`` is not valid ``language`` ("line N: ..."), or None when it parses."""
    if not code.strip():
        return "empty"
    if language == "python":
        try:
            compile(code, "<generated>", "exec", dont_inherit=True)
        except SyntaxError as exc:  # compile() is the stricter judge for Python
            return f"line {exc.lineno}: {exc.msg}"
        except ValueError as exc:  # a NUL byte
            return str(exc)
    parser, _query = parser_and_query(language)
    root = parser.parse(code.encode("utf-8")).root_node
    if not root.has_error:
        return None
    node = _first_error(root)
    return f"line {node.start_point[0] + 1}: does not parse as {language}"


def _first_error(node):
    for child in node.children:
        if child.is_error or child.is_missing:
            return child
        if child.has_error:
            return _first_error(child)
    return node


def identifier_words(text: str) -> set[str]:
    """The lower-case words of every identifier in ``text``: ``readJSONFile`` -> read, json, file."""
    words: set[str] = set()
    for name in _IDENTIFIER.findall(text):
        for part in name.split("_"):
            words.update(piece.lower() for piece in _CAMEL.findall(part))
    return words
