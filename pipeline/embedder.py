"""Sentence embeddings through sentence-transformers, L2-normalised."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class Embedder:
    def __init__(
        self,
        path: str,
        name: str,
        batch_size: int = 64,
        device: str | None = None,
        languages: tuple[str, ...] | None = None,
    ):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.languages = languages  # None: trusted for every language
        self.batch_size = batch_size
        self.model = SentenceTransformer(path, device=device)
        log.info("embedder %s loaded", name)

    def supports(self, *languages: str) -> bool:
        """Whether scores of this embedder mean something for texts in these languages."""
        return self.languages is None or all(lang in self.languages for lang in languages)

    @property
    def dimension(self) -> int:
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get() or 0)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Unit vectors, shape (len(texts), dim), float32; dot products are cosines."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)
