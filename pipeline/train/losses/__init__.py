"""Training losses, one per file."""

from .cached import cached_backward
from .infonce import ImprovedInfoNCE
from .matryoshka import MatryoshkaLoss
from .reranker import pointwise_reranker_loss

__all__ = ["ImprovedInfoNCE", "MatryoshkaLoss", "cached_backward", "pointwise_reranker_loss"]
