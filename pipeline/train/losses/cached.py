"""Gradient caching: a big contrastive batch on a small GPU, with the same loss and gradients.

In-batch negatives want large batches; activations of a large batch do not fit. Gradient
caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup") splits the work in three passes:

1. embed every mini-batch without building a graph;
2. compute the full-batch loss on those embeddings (detached leaves) and backpropagate to
   them, which is cheap: the loss only sees (N, d) tensors;
3. embed each mini-batch again with a graph and backpropagate the cached embedding
   gradients into the model, one mini-batch at a time.

Parameter gradients equal those of the plain loss on the whole batch (dropout must repeat
between passes 1 and 3: run in eval mode, or fork the RNG state per mini-batch as done here).

Inputs:
    encode: function from a mini-batch of inputs to embeddings (m, d)
    groups: {"q": inputs, "p": inputs, "n": inputs or absent}, each a list of mini-batches;
        "n" holds N*K rows in row-major (row i's negatives together)
    loss_fn: function (q, p, n) -> scalar, e.g. ImprovedInfoNCE()
    k: hard negatives per row
Returns the loss value (detached); parameter ``.grad`` fields hold its gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class RandomState:
    """The CPU and every CUDA device's random state, so a recomputed forward draws the same dropout."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def cached_backward(
    encode: Callable[[object], torch.Tensor],
    groups: dict[str, Sequence[object]],
    loss_fn: Callable[..., torch.Tensor],
    k: int = 0,
) -> torch.Tensor:
    """The loss of the whole batch, with its parameter gradients accumulated mini-batch by mini-batch.

    Args:
        encode: mini-batch of inputs -> embeddings (m, d), with the model's graph.
        groups: ``{"q": [...], "p": [...], "n": [...]}``, each a list of mini-batches of inputs;
            ``"n"`` (optional) holds the N*K negatives row after row.
        loss_fn: ``(q, p, n) -> scalar`` on the whole batch's embeddings, e.g. ``ImprovedInfoNCE()``.
        k: hard negatives per row (``n`` is reshaped to (N, k, d)).

    References:
        Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
        Setup" (arXiv 2101.06983).

    Example:
        >>> import torch
        >>> from pipeline.train.losses import ImprovedInfoNCE
        >>> model = torch.nn.Linear(8, 4)
        >>> groups = {"q": [torch.randn(2, 8), torch.randn(2, 8)], "p": [torch.randn(4, 8)]}
        >>> value = cached_backward(model, groups, ImprovedInfoNCE())
    """
    states: dict[str, list] = {}
    cached: dict[str, torch.Tensor] = {}
    with torch.no_grad():  # pass 1
        for name, chunks in groups.items():
            embeddings, rng = [], []
            for chunk in chunks:
                rng.append(RandomState())
                embeddings.append(encode(chunk))
            states[name] = rng
            cached[name] = torch.cat(embeddings).detach().requires_grad_(True)
    q, p = cached["q"], cached["p"]
    n = cached["n"].reshape(q.shape[0], k, -1) if "n" in cached else None
    loss = loss_fn(q, p, n)  # pass 2
    loss.backward()
    for name, chunks in groups.items():  # pass 3
        start = 0
        for chunk, state in zip(chunks, states[name], strict=True):
            state.restore()
            embeddings = encode(chunk)
            grad = cached[name].grad[start : start + embeddings.shape[0]]
            embeddings.backward(grad)
            start += embeddings.shape[0]
    return loss.detach()
