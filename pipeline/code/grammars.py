"""The programming languages the code reader knows: file suffixes, tree-sitter grammar, and the
query that finds their functions, methods and classes.

One grammar wheel per language (``tree-sitter-python`` and the like), loaded on first use.
A query names each unit node ``@function`` or ``@class``; classes (and Rust ``impl`` blocks,
C++ namespaces) are also the scopes that qualify the names inside them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Grammar:
    name: str  # the language as rows and messages name it
    module: str  # the grammar wheel's module
    entry: str  # its function returning the language
    suffixes: tuple[str, ...]
    query: str
    scopes: frozenset[str]  # node types whose name qualifies what is inside (classes, impls, namespaces)
    comments: frozenset[str] = frozenset({"comment"})
    # C and C++ are parsed before the preprocessor runs, so macros (export markers, attribute
    # macros) leave error nodes in sound code: there only the units holding an error are dropped
    lenient: bool = False


_JS = """
(function_declaration) @function
(generator_function_declaration) @function
(method_definition) @function
(variable_declarator value: [(arrow_function) (function_expression)]) @function
(class_declaration) @class
"""

GRAMMARS = (
    Grammar(
        "python",
        "tree_sitter_python",
        "language",
        (".py",),
        "(function_definition) @function (class_definition) @class",
        frozenset({"class_definition"}),
    ),
    Grammar(
        "javascript",
        "tree_sitter_javascript",
        "language",
        (".js", ".mjs", ".cjs", ".jsx"),
        _JS,
        frozenset({"class_declaration"}),
    ),
    Grammar(
        "typescript",
        "tree_sitter_typescript",
        "language_typescript",
        (".ts", ".mts", ".cts"),
        _JS,
        frozenset({"class_declaration"}),
    ),
    Grammar(
        "tsx",
        "tree_sitter_typescript",
        "language_tsx",
        (".tsx",),
        _JS,
        frozenset({"class_declaration"}),
    ),
    Grammar(
        "go",
        "tree_sitter_go",
        "language",
        (".go",),
        "(function_declaration) @function (method_declaration) @function",
        frozenset(),
    ),
    Grammar(
        "java",
        "tree_sitter_java",
        "language",
        (".java",),
        "(method_declaration) @function (constructor_declaration) @function"
        " (class_declaration) @class (interface_declaration) @class",
        frozenset({"class_declaration", "interface_declaration", "enum_declaration"}),
        frozenset({"line_comment", "block_comment"}),
    ),
    Grammar(
        "rust",
        "tree_sitter_rust",
        "language",
        (".rs",),
        "(function_item) @function (impl_item) @class (trait_item) @class",
        frozenset({"impl_item", "trait_item", "mod_item"}),
        frozenset({"line_comment", "block_comment"}),
    ),
    Grammar(
        "c",
        "tree_sitter_c",
        "language",
        (".c",),
        "(function_definition) @function",
        frozenset(),
        lenient=True,
    ),
    Grammar(
        "cpp",
        "tree_sitter_cpp",
        "language",
        # a .h header may be C or C++: C++'s grammar reads both
        (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".h"),
        "(function_definition) @function (class_specifier) @class (struct_specifier) @class",
        frozenset({"class_specifier", "struct_specifier", "namespace_definition"}),
        lenient=True,
    ),
)
BY_SUFFIX = {suffix: grammar for grammar in GRAMMARS for suffix in grammar.suffixes}
BY_NAME = {grammar.name: grammar for grammar in GRAMMARS}


def grammar_for(path: str) -> Grammar | None:
    """The grammar of a file by its suffix; None for anything else."""
    name = path.rsplit("/", 1)[-1]
    return BY_SUFFIX.get("." + name.rsplit(".", 1)[-1].lower()) if "." in name else None


@cache
def parser_and_query(name: str):
    """(tree_sitter.Parser, tree_sitter.Query) of a language, built once per process."""
    import tree_sitter

    grammar = BY_NAME[name]
    language = tree_sitter.Language(getattr(importlib.import_module(grammar.module), grammar.entry)())
    return tree_sitter.Parser(language), tree_sitter.Query(language, grammar.query)
