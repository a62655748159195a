"""The persona collection, retrieval of a passage's top-k personas, and the step that attaches them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import schema as S
from .. import storage
from ..embed.embedder import Embedder
from ..jsonl import iter_jsonl
from ..step import Row, Step, StepResult
from .prompts import bundled_folder


class PersonaError(ValueError):
    """A persona file that cannot be read; the message names file and line."""


def default_persona_dir() -> Path:
    """``personas/`` of the checkout, or the copy bundled into an installed wheel."""
    folder = bundled_folder("personas")
    if folder is None:
        raise PersonaError(f"no personas folder found beside {Path(__file__).resolve().parents[1]}")
    return folder


def _read_file(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        personas = []
        for where, row in iter_jsonl(path, PersonaError):
            text = row.get("persona")
            if not isinstance(text, str):
                raise PersonaError(f"{where}: missing string field 'persona'")
            personas.append(text.strip())
        return [p for p in personas if p]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def developer_personas(path: str | Path | None = None) -> list[str]:
    """The personas of the code task types: ``personas.code_path``, or ``personas/developers/``."""
    return load_personas(path or default_persona_dir() / "developers")


def load_personas(path: str | Path | None = None) -> list[str]:
    """Personas from a .txt (one a line) or .jsonl (Persona Hub ``persona`` field), or a folder of them.

    Duplicates are removed, order is kept, so retrieval is deterministic.
    """
    root = storage.location(path) if path else default_persona_dir()
    if root.is_dir():
        files = sorted((p for p in root.iterdir() if p.suffix in {".txt", ".jsonl"}), key=str)
    elif root.is_file():
        files = [root]
    else:
        raise PersonaError(f"{root}: no such persona file or folder")
    personas = list(dict.fromkeys(p for f in files for p in _read_file(f)))
    if not personas:
        raise PersonaError(f"{root}: no personas found")
    return personas


def top_k(passage_vectors: np.ndarray, persona_vectors: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar personas for each passage, best first.

    passage_vectors (P, d) and persona_vectors (M, d) are unit vectors; one matrix
    product scores every pair.
    """
    k = min(k, persona_vectors.shape[0])
    scores = passage_vectors @ persona_vectors.T  # (P, M) cosines
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (P, k) unordered
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class PersonaCandidates(Step):
    """Attach the top-k candidate personas of each passage (the paper: top 5 by embedding similarity)."""

    name = "personas"
    task_types = frozenset({"retrieval", "classification", "domain"})

    def __init__(
        self,
        embedder: Embedder,
        personas: list[str],
        k: int = 5,
        name: str | None = None,
        task_types: frozenset[str] | None = None,
    ):
        # a second collection for other task types (the developers of the code types) is a
        # second instance under its own name
        self.name = name or self.name
        self.task_types = task_types or self.task_types
        self.embedder = embedder
        self.personas = personas
        self.k = k
        self._persona_vectors: np.ndarray | None = None  # encoded once, on first use

    def persona_vectors(self) -> np.ndarray:
        if self._persona_vectors is None:
            self._persona_vectors = self.embedder.encode(self.personas, role="passage")
        return self._persona_vectors

    def __call__(self, rows: list[Row]) -> StepResult:
        if not rows:
            return StepResult()
        passages = self.embedder.encode([row[S.POSITIVE] for row in rows], role="passage")
        best = top_k(passages, self.persona_vectors(), self.k)
        for row, indices in zip(rows, best, strict=True):
            row[S.WORK_CANDIDATES] = [self.personas[i] for i in indices]
        return StepResult(kept=rows)
