"""Matryoshka wrapper: the same loss on several prefixes of the embedding, summed.

Inputs are those of the wrapped loss; every embedding tensor is cut to its first ``dim``
values along the last axis, then the wrapped loss renormalises (truncate first, then
normalise, as MRL requires). Reference: Kusupati et al. 2022, "Matryoshka Representation
Learning"; the Qwen3 Embedding models support any dimension from 32 up.

Example:
    >>> import torch
    >>> from pipeline.train.losses import ImprovedInfoNCE
    >>> loss = MatryoshkaLoss(ImprovedInfoNCE(), dims=[32, 64])
    >>> value = loss(torch.randn(4, 64), torch.randn(4, 64), torch.randn(4, 1, 64))
"""

from __future__ import annotations

import torch
from torch import nn


class MatryoshkaLoss(nn.Module):
    """``loss`` on the first ``dim`` values of every embedding, for each dim, weighted and summed.

    Args:
        loss: the wrapped loss, called as ``loss(q, p, n, **kwargs)``; it must normalise its inputs.
        dims: the prefix lengths to train, e.g. ``[32, 64, 128, 384]``.
        weights: one weight per dim (default: 1 each).

    References:
        Kusupati et al. 2022, "Matryoshka Representation Learning" (arXiv 2205.13147).
    """

    def __init__(self, loss: nn.Module, dims: list[int], weights: list[float] | None = None):
        super().__init__()
        self.loss = loss
        self.dims = list(dims)
        self.weights = list(weights) if weights else [1.0] * len(self.dims)

    def forward(
        self, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        total = q.new_zeros(())
        for dim, weight in zip(self.dims, self.weights, strict=True):
            total = total + weight * self.loss(
                q[..., :dim], p[..., :dim], None if n is None else n[..., :dim], **kwargs
            )
        return total
