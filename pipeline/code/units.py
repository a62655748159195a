"""Source code cut by its structure: functions, methods and classes, each a ``CodeUnit``.

A unit carries what the code task types need: the file and line it starts at, its language,
its qualified symbol (``Class.method``, ``S.Method`` for a Go method, ``Type.fn`` in a Rust
``impl``), its signature, its documentation (a Python docstring, or the comment block right
above it in the other languages) kept apart, and its code with and without that docstring.
A file that tree-sitter cannot parse without errors raises ``CodeParseError``: a half-parsed
file would give units cut in the wrong places. C and C++ are read before any preprocessor, so
there a macro may leave an error node in sound code: only the units holding one are left out
(``split_source`` reports how many).
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass

from .grammars import Grammar, parser_and_query

_NAME_TYPES = {"identifier", "field_identifier", "type_identifier", "qualified_identifier", "operator_name"}
_NAME_TYPES |= {"destructor_name", "property_identifier", "namespace_identifier"}
_COMMENT_MARK = re.compile(r"^\s*(/\*\*?|\*/|\*|///?|//!|#)\s?")


class CodeParseError(ValueError):
    """A source file with syntax errors; the message names the file and the first bad line."""


@dataclass(frozen=True)
class CodeUnit:
    path: str
    language: str
    kind: str  # "function", "method" or "class"
    symbol: str  # qualified by the enclosing classes, impls, namespaces and functions
    signature: str
    docstring: str  # "" when there is none
    code: str  # the unit as written
    body: str  # the code without its docstring (the same as ``code`` outside Python)
    line: int  # 1-based
    end_line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def split_source(path: str, data: bytes, grammar: Grammar) -> tuple[list[CodeUnit], int]:
    """Every function, method and class of one file, in source order; and how many were left out
    for holding a parse error (C and C++ only: elsewhere such a file raises ``CodeParseError``)."""
    parser, query = parser_and_query(grammar.name)
    tree = parser.parse(data)
    if tree.root_node.has_error and not grammar.lenient:
        raise CodeParseError(f"{path}:{_first_error_line(tree.root_node)}: does not parse as {grammar.name}")
    import tree_sitter

    captures = tree_sitter.QueryCursor(query).captures(tree.root_node)
    found = [(node, "class") for node in captures.get("class", [])]
    found += [(node, "function") for node in captures.get("function", [])]
    found.sort(key=lambda item: item[0].start_byte)
    functions = {node.id for node in captures.get("function", [])}
    sound = [(node, kind) for node, kind in found if not node.has_error]
    units = [_unit(path, data, grammar, node, kind, functions) for node, kind in sound]
    return units, len(found) - len(sound)


def _first_error_line(node) -> int:
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            return current.start_point[0] + 1
        if current.has_error:
            stack.extend(reversed(current.children))
    return node.start_point[0] + 1


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8", errors="replace")


def _name(node, data: bytes) -> str:
    named = node.child_by_field_name("name")
    if named is None and node.type == "impl_item":
        named = node.child_by_field_name("type")
    current = named or node.child_by_field_name("declarator")
    while current is not None and current.type not in _NAME_TYPES:  # C and C++ declarator chains
        current = current.child_by_field_name("declarator") or current.child_by_field_name("name")
    return _text(data, current.start_byte, current.end_byte) if current is not None else "<anonymous>"


def _receiver(node, data: bytes) -> str | None:
    """The type a Go method belongs to (``func (s *S) M()`` -> ``S``)."""
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return None
    words = re.findall(r"[A-Za-z_]\w*", _text(data, receiver.start_byte, receiver.end_byte))
    return words[-1] if words else None


def _unit(path: str, data: bytes, grammar: Grammar, node, kind: str, functions: set[int]) -> CodeUnit:
    symbol, in_class, nearest = _name(node, data), False, True
    parent = node.parent
    while parent is not None:
        if parent.type in grammar.scopes or parent.id in functions:
            symbol = f"{_name(parent, data)}.{symbol}"
            # a method is defined right in a class; a function nested in a method is not one
            in_class = in_class or (nearest and parent.type in grammar.scopes)
            nearest = False
        parent = parent.parent
    receiver = _receiver(node, data) if node.type == "method_declaration" else None
    if receiver:
        symbol, in_class = f"{receiver}.{symbol}", True
    if kind == "function" and in_class:
        kind = "method"
    target = node.child_by_field_name("value") if node.type == "variable_declarator" else node
    body = target.child_by_field_name("body") if target is not None else None
    end = body.start_byte if body is not None else node.end_byte
    signature = " ".join(_text(data, node.start_byte, end).split()).rstrip(" :{=>")
    code = _text(data, node.start_byte, node.end_byte)
    if grammar.name == "python":
        docstring, without = _python_docstring(data, node, body)
    else:
        docstring, without = _comment_above(data, node, grammar), code
    return CodeUnit(
        path=path,
        language=grammar.name,
        kind=kind,
        symbol=symbol,
        signature=signature,
        docstring=docstring,
        code=code,
        body=without,
        line=node.start_point[0] + 1,
        end_line=node.end_point[0] + 1,
    )


def _python_docstring(data: bytes, node, body) -> tuple[str, str]:
    code = _text(data, node.start_byte, node.end_byte)
    first = body.named_children[0] if body is not None and body.named_children else None
    if first is None or first.type != "expression_statement" or first.named_children[0].type != "string":
        return "", code
    literal = _text(data, first.start_byte, first.end_byte)
    try:
        docstring = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        docstring = literal.strip("\"'")
    # the code with the docstring's lines taken out (the statement and the line it stood on)
    line_start = data.rfind(b"\n", 0, first.start_byte) + 1
    line_end = data.find(b"\n", first.end_byte)
    line_end = len(data) if line_end < 0 else line_end + 1
    without = _text(data, node.start_byte, line_start) + _text(data, line_end, node.end_byte)
    return inspect.cleandoc(str(docstring)), without.rstrip()


def _comment_above(data: bytes, node, grammar: Grammar) -> str:
    """The comment lines right above a unit (or above the export / template wrapping it)."""
    anchor = node
    while anchor.parent is not None and anchor.parent.type in {
        "export_statement",
        "template_declaration",
        "lexical_declaration",
        "variable_declaration",
    }:
        anchor = anchor.parent
    lines: list[str] = []
    previous, line = anchor.prev_named_sibling, anchor.start_point[0]
    while previous is not None and previous.type in grammar.comments and previous.end_point[0] >= line - 1:
        lines[:0] = _text(data, previous.start_byte, previous.end_byte).splitlines()
        line = previous.start_point[0]
        previous = previous.prev_named_sibling
    cleaned = [_COMMENT_MARK.sub("", text).rstrip("*/ ").strip() for text in lines]
    return "\n".join(text for text in cleaned if text).strip()
