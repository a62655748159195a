"""The persona collection and retrieval of the top-k personas for a passage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .jsonl import iter_jsonl


class PersonaError(ValueError):
    """A persona file that cannot be read; the message names file and line."""


def default_persona_dir() -> Path:
    """``personas/`` of the checkout, or the copy bundled into an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "personas", here / "_bundled" / "personas"):
        if candidate.is_dir():
            return candidate
    raise PersonaError(f"no personas folder found beside {here}")


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


def load_personas(path: str | Path | None = None) -> list[str]:
    """Personas from a .txt (one a line) or .jsonl (Persona Hub ``persona`` field), or a folder of them.

    Duplicates are removed, order is kept, so retrieval is deterministic.
    """
    root = Path(path) if path else default_persona_dir()
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in {".txt", ".jsonl"})
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
