"""Jinja prompt templates: sandboxed, strict about missing variables, hashed.

Templates live in ``prompts/<task>/<name>.j2``. A language may override a
template with ``<name>.<lang>.j2`` beside it. Every row records the short hash
of each template that produced it, so a dataset can be traced to its prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment


class PromptError(ValueError):
    """A template that is missing, malformed, or rendered without a variable it needs."""


def bundled_folder(name: str) -> Path | None:
    """``name/`` at the checkout's top level (prompts, personas), or its copy inside an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / name, package / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    return None


def default_prompt_dir() -> Path:
    """``prompts/`` of the checkout, or the copy bundled into an installed wheel."""
    folder = bundled_folder("prompts")
    if folder is None:
        raise PromptError(f"no prompts folder found beside {Path(__file__).resolve().parents[1]}")
    return folder


@dataclass(frozen=True)
class Prompt:
    name: str  # e.g. "retrieval/query"
    source: str
    path: Path

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:12]


class PromptLibrary:
    """Loads and renders templates; one sandboxed environment shared by all of them."""

    def __init__(self, root: Path | None = None):
        self.root = root or default_prompt_dir()
        self._env = SandboxedEnvironment(
            undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False
        )
        self._cache: dict[tuple[str, str | None], tuple[Prompt, Any]] = {}

    def _load(self, name: str, language: str | None) -> tuple[Prompt, Any]:
        key = (name, language)
        if key not in self._cache:
            candidates = [self.root / f"{name}.{language}.j2"] if language else []
            candidates.append(self.root / f"{name}.j2")
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise PromptError(f"template {name!r} not found under {self.root}")
            source = path.read_text(encoding="utf-8")
            try:
                template = self._env.from_string(source)
            except TemplateError as exc:
                raise PromptError(f"{path}: {exc}") from exc
            self._cache[key] = (Prompt(name=name, source=source, path=path), template)
        return self._cache[key]

    def prompt(self, name: str, language: str | None = None) -> Prompt:
        return self._load(name, language)[0]

    def render(self, name: str, variables: dict[str, Any], language: str | None = None) -> str:
        prompt, template = self._load(name, language)
        try:
            return template.render(**variables).strip()
        except UndefinedError as exc:
            raise PromptError(f"{prompt.path}: {exc.message}; given: {sorted(variables)}") from exc
        except TemplateError as exc:  # includes the sandbox's SecurityError
            raise PromptError(f"{prompt.path}: {exc}") from exc


# the templates each task type renders
TEMPLATES = {
    "retrieval": ("retrieval/configure", "retrieval/query", "retrieval/negatives", "judge/relevance"),
    "bitext": ("bitext/translate",),
    "classification": ("classification/classify", "classification/labels"),
    "sts": ("sts/pair",),
    "code_search": ("code_search/query", "code_search/negatives", "judge/relevance"),
    "code_docs": ("code_docs/query", "retrieval/negatives", "judge/relevance"),
    "code_translation": ("code_translation/translate",),
    "domain": ("domain/brainstorm", "domain/example", "judge/relevance"),
}


def templates_of(config) -> list[str]:
    """The templates a run with this RunConfig renders."""
    names = list(dict.fromkeys(name for task in config.generation.tasks for name in TEMPLATES[task]))
    if config.generation.calls == "one" and "retrieval/configure" in names:
        names[names.index("retrieval/configure") : names.index("retrieval/query") + 1] = [
            "retrieval/persona_query"
        ]
    return names
