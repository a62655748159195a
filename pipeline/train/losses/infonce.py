"""The improved InfoNCE of the Qwen3 Embedding paper (arXiv 2506.05176, section 3).

Inputs (unit-normalised inside):
    q:  (N, d)    query embeddings
    p:  (N, d)    positive document embeddings
    n:  (N, K, d) hard negatives of each query (K may be 0)
    positive_ids / negative_ids: optional (N,) / (N, K) integer ids of the texts, so a document that
        is the same text as a row's positive can be masked wherever it appears

For row i with cosine scores s and temperature tau:

    L_i = -log( exp(s(q_i, d_i+)/tau) / Z_i )
    Z_i = exp(s(q_i, d_i+)/tau)
        + sum_k      m * exp(s(q_i, d_ik-)/tau)   hard negatives of q_i          (hard_negatives)
        + sum_{j!=i} m * exp(s(q_i, q_j)/tau)     other queries                  (query_query)
        + sum_{j!=i} m * exp(s(d_i+, d_j)/tau)    positive vs other documents    (doc_doc)
        + sum_{j!=i} m * exp(s(q_i, d_j)/tau)     query vs other documents       (query_doc)

"Other documents" are every in-batch document that is not row i's own: the other rows'
positives and their hard negatives. The mask m is 0 when a score exceeds
s(q_i, d_i+) + margin (a likely false negative) or when the document is the same text as
d_i+; 1 otherwise. With query_query and doc_doc off and no mask, this is exactly
sentence-transformers' MultipleNegativesRankingLoss with scale = 1/tau.

Example:
    >>> import torch
    >>> loss = ImprovedInfoNCE(temperature=0.05)
    >>> q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 2, 8)
    >>> value = loss(q, p, n)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImprovedInfoNCE(nn.Module):
    """The paper's contrastive loss over a batch of (query, positive, hard negatives) rows.

    Args:
        temperature: tau; scores are divided by it (the paper does not state its value).
        hard_negatives: include each query's own hard negatives in Z.
        query_query: include the other in-batch queries, s(q_i, q_j).
        doc_doc: include the other in-batch documents against the positive, s(d_i+, d_j).
        query_doc: include the other in-batch documents against the query, s(q_i, d_j).
        mask_false_negatives: zero every term whose score exceeds s(q_i, d_i+) + ``margin``,
            and every document that is the same text as the positive.
        margin: how far above the positive's score a term may be before it is masked.

    References:
        Zhang et al. 2025, "Qwen3 Embedding: Advancing Text Embedding and Reranking Through
        Foundation Models" (arXiv 2506.05176), section 3.
        van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"
        (InfoNCE).
    """

    def __init__(
        self,
        temperature: float = 0.05,
        hard_negatives: bool = True,
        query_query: bool = True,
        doc_doc: bool = True,
        query_doc: bool = True,
        mask_false_negatives: bool = True,
        margin: float = 0.1,
    ):
        super().__init__()
        self.temperature = temperature
        self.hard_negatives = hard_negatives
        self.query_query = query_query
        self.doc_doc = doc_doc
        self.query_doc = query_doc
        self.mask_false_negatives = mask_false_negatives
        self.margin = margin

    def forward(
        self,
        q: torch.Tensor,
        p: torch.Tensor,
        n: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        N, d = q.shape
        K = 0 if n is None else n.shape[1]
        q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
        docs = (
            p if K == 0 else torch.cat([p, F.normalize(n, dim=-1).reshape(N * K, d)])
        )  # (D, d), D = N + N*K
        D = docs.shape[0]
        owner = (
            torch.arange(D, device=q.device) % N
            if K == 0
            else torch.cat(
                [torch.arange(N, device=q.device), torch.arange(N, device=q.device).repeat_interleave(K)]
            )
        )  # (D,) the row each document belongs to
        rows = torch.arange(N, device=q.device)

        s_qd = q @ docs.T  # (N, D)
        s_pos = s_qd[rows, rows]  # (N,) own positives: the first N documents
        own = owner.unsqueeze(0) == rows.unsqueeze(1)  # (N, D) documents of row i (positive and negatives)
        is_own_positive = torch.zeros_like(own)
        is_own_positive[rows, rows] = True

        keep_qd = torch.zeros_like(own)
        if self.hard_negatives:
            keep_qd |= own & ~is_own_positive
        if self.query_doc:
            keep_qd |= ~own
        keep_qd |= is_own_positive
        # (scores, candidates kept, the target cell that is never masked, columns are documents)
        blocks = [(s_qd, keep_qd, is_own_positive, True)]
        if self.query_query:
            s_qq = q @ q.T  # (N, N)
            blocks.append((s_qq, ~torch.eye(N, dtype=torch.bool, device=q.device), None, False))
        if self.doc_doc:
            s_dd = p @ docs.T  # (N, D) each row's positive against every in-batch document
            blocks.append((s_dd, ~own, None, True))

        doc_ids = None
        if positive_ids is not None:
            doc_ids = positive_ids if K == 0 else torch.cat([positive_ids, negative_ids.reshape(-1)])
        logits, allowed = [], []
        for scores, keep, protected, of_documents in blocks:
            if self.mask_false_negatives:
                suspect = self._false_negatives(scores, s_pos, protected, of_documents, doc_ids, positive_ids)
                keep = keep & ~suspect
            logits.append(scores / self.temperature)
            allowed.append(keep)
        logits = torch.cat(logits, dim=1)  # (N, total candidates); column i of the first block is the target
        logits = logits.masked_fill(~torch.cat(allowed, dim=1), float("-inf"))
        return F.cross_entropy(logits, rows)

    def _false_negatives(self, scores, s_pos, protected, of_documents, doc_ids, positive_ids) -> torch.Tensor:
        """Cells of one block to mask: scored above the row's positive plus the margin, or (for
        document columns, when ids are given) the same text as the row's positive; never the target."""
        suspect = scores > (s_pos + self.margin).unsqueeze(1)
        if doc_ids is not None and of_documents:
            suspect |= doc_ids.unsqueeze(0) == positive_ids.unsqueeze(1)  # (N, D)
        if protected is not None:
            suspect &= ~protected
        return suspect
