"""Training losses, one per file.

- ``infonce.py``: the improved InfoNCE's math on embeddings (tested against its formula).
- ``trainer_loss.py``: the same loss as a sentence-transformers loss for the trainer (plain or
  cached, gathered across processes; Matryoshka through sentence-transformers' wrapper).
- ``reranker.py``: the point-wise yes/no reranker's prompt, score and loss.
"""

from .infonce import ImprovedInfoNCE
from .reranker import pointwise_reranker_loss

__all__ = ["ImprovedInfoNCE", "pointwise_reranker_loss"]
