"""Point-wise yes/no reranker of the Qwen3 Embedding paper: prompt format, scorer and loss.

The reranker is a causal LM asked whether a document meets a query under an instruction,
answering only "yes" or "no". The relevance score is the softmax over the two logits of
"yes" and "no" at the last position; training minimises -log p(label), where label is
"yes" for relevant pairs and "no" otherwise (the same two-way softmax).

Inputs of the loss:
    last_logits: (B, V) logits of the next token after the prompt
    yes_id, no_id: token ids of "yes" and "no"
    labels: (B,) 1 for relevant, 0 for not relevant

Example:
    >>> import torch
    >>> loss = pointwise_reranker_loss(torch.randn(2, 10), yes_id=3, no_id=4, labels=torch.tensor([1, 0]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def reranker_prompt(query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The full prompt in Qwen3 chat markup, ending where the model writes yes or no."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def yes_no_logits(last_logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    return torch.stack([last_logits[:, no_id], last_logits[:, yes_id]], dim=1)  # (B, 2): [no, yes]


def relevance_scores(last_logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """p(yes) from the two-way softmax, shape (B,)."""
    return yes_no_logits(last_logits, yes_id, no_id).softmax(dim=1)[:, 1]


def pointwise_reranker_loss(
    last_logits: torch.Tensor, yes_id: int, no_id: int, labels: torch.Tensor
) -> torch.Tensor:
    """-log p(label) under the two-way softmax of the "yes" and "no" logits.

    Args:
        last_logits: (B, V) logits of the token after each prompt (``reranker_prompt``).
        yes_id: token id of "yes".
        no_id: token id of "no".
        labels: (B,) 1 where the document meets the query, 0 where it does not.

    References:
        Zhang et al. 2025, "Qwen3 Embedding" (arXiv 2506.05176), section 2 (the reranker's
        prompt and score).
    """
    return F.cross_entropy(yes_no_logits(last_logits, yes_id, no_id), labels.long())
