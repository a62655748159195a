"""The improved InfoNCE as a sentence-transformers loss, for ``SentenceTransformerTrainer``.

The trainer hands the loss one tokenized batch per dataset column: ``anchor`` (the queries),
``positive``, then ``negative_1`` ... ``negative_K``. This module embeds them with the model
and applies :class:`~pipeline.train.losses.infonce.ImprovedInfoNCE` (the math lives there, and
is tested there), so the paper's loss runs inside the field's trainer: its devices, mixed
precision, gradient accumulation, checkpoints and several processes.

- ``mini_batch_size > 0`` turns on gradient caching (sentence-transformers' ``CachedLossMixin``,
  the GradCache of Gao et al. 2021): the whole batch's loss and gradients with the activation
  memory of one mini-batch.
- Under several processes the embeddings of every process are gathered (with their gradients)
  before the loss, so each query sees the whole global batch as in-batch negatives. Every
  process computes the same full loss; the gather's backward sums the world's gradients into
  each process's own embeddings and DDP averages them, which gives exactly the gradient of
  that one loss.
- Wrap it in sentence-transformers' ``MatryoshkaLoss`` for Matryoshka training: that wrapper
  truncates the embeddings this loss reads (or the cached ones, with gradient caching).

Example:
    >>> from sentence_transformers import SentenceTransformer
    >>> from datasets import Dataset
    >>> model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")   # doctest: +SKIP
    >>> loss = ImprovedInfoNCELoss(model, temperature=0.05)                     # doctest: +SKIP
    >>> rows = Dataset.from_dict({"anchor": ["q"], "positive": ["d"], "negative_1": ["n"]})
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import column_merging_disabled, embed_columns
from sentence_transformers.util import all_gather_with_grad
from sentence_transformers.util.environment import is_dist_initialized
from torch import nn

from .infonce import ImprovedInfoNCE


class ImprovedInfoNCELoss(CachedLossMixin, nn.Module):
    """The paper's contrastive loss over (anchor, positive, negative_1..K) columns.

    Args:
        model: the SentenceTransformer being trained.
        temperature: tau of the loss (scores are divided by it).
        mini_batch_size: > 0: gradient caching, embedding this many texts at a time; 0: one pass.
        gather_across_devices: with several processes, use every process's rows as in-batch
            negatives (the global batch); off, each process contrasts its own rows only.
        **terms: the switches of :class:`ImprovedInfoNCE` (``query_query``, ``doc_doc``,
            ``query_doc``, ``hard_negatives``, ``mask_false_negatives``, ``margin``).

    References:
        Zhang et al. 2025, "Qwen3 Embedding" (arXiv 2506.05176), section 3.
        Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
        Setup" (arXiv 2101.06983).
    """

    def __init__(
        self,
        model: nn.Module,
        temperature: float = 0.05,
        mini_batch_size: int = 0,
        gather_across_devices: bool = True,
        **terms: Any,
    ):
        super().__init__()
        self.model = model
        self.loss = ImprovedInfoNCE(temperature=temperature, **terms)
        self.mini_batch_size = mini_batch_size
        # read by sentence-transformers (and its MatryoshkaLoss) to pick the cached path
        self.uses_gradient_cache = mini_batch_size > 0
        self.gather_across_devices = gather_across_devices

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels=None) -> torch.Tensor:
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(f"expected anchor and positive columns at least, got {len(features)} column(s)")
        if self.uses_gradient_cache:
            return self.forward_cached(features, labels)
        # sentence-transformers embeds all columns in one forward pass, every text padded to the
        # longest: on a GPU one big pass is faster; on a CPU, whose time grows with every token,
        # short queries padded to the passages' length cost more than the passes saved
        merged = nullcontext() if self.model.device.type == "cuda" else column_merging_disabled()
        with merged:
            return self.compute_loss_from_embeddings(embed_columns(self.model, features))

    def calculate_loss(self, reps: list[list[torch.Tensor]], labels=None, *, with_backward: bool = False):
        """The whole batch's loss from its mini-batches' embeddings (the cached path's step 2)."""
        loss = self.compute_loss_from_embeddings([torch.cat(column) for column in reps])
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        # float32 for the scores: under bf16 autocast a 0.05 temperature leaves too few bits
        columns = [e.float() for e in embeddings]
        if self.gather_across_devices and is_dist_initialized():
            columns = [all_gather_with_grad(c) for c in columns]
        q, p, *negatives = columns
        n = torch.stack(negatives, dim=1) if negatives else None  # (N, K, d)
        return self.loss(q, p, n)

    def get_config_dict(self) -> dict[str, Any]:
        """What sentence-transformers writes into the model card about this loss."""
        loss = self.loss
        return {
            "temperature": loss.temperature,
            "hard_negatives": loss.hard_negatives,
            "query_query": loss.query_query,
            "doc_doc": loss.doc_doc,
            "query_doc": loss.query_doc,
            "mask_false_negatives": loss.mask_false_negatives,
            "margin": loss.margin,
            "mini_batch_size": self.mini_batch_size,
            "gather_across_devices": self.gather_across_devices,
        }
