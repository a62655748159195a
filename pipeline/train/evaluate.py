"""Retrieval evaluation on a BEIR-layout folder: nDCG@10 and Recall@100 by exact search."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

from ..beir import load_beir
from .encoder import Encoder


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def evaluate(
    model_path: str,
    benchmark: Path,
    split: str | None = None,
    dim: int | None = None,
    instruction: str | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    query_ids: set[str] | None = None,
    encoder: Encoder | None = None,
) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over the queries that have relevance labels (optionally a subset)."""
    corpus, queries, qrels = load_beir(benchmark, split, with_title=True)
    wanted = [q for q in sorted(qrels) if q in queries and (query_ids is None or q in query_ids)]
    encoder = encoder or Encoder(model_path, max_length=max_length)
    encoder.eval()
    doc_ids = sorted(corpus)
    doc_vectors = []
    for start in tqdm(range(0, len(doc_ids), batch_size), desc="corpus", unit="batch"):
        doc_vectors.append(
            encoder.encode(
                [corpus[d] for d in doc_ids[start : start + batch_size]], dim=dim, batch_size=batch_size
            )
        )
    docs = torch.cat(doc_vectors)  # (D, dim)
    query_vectors = encoder.encode(
        [queries[q] for q in wanted], instruction=instruction, dim=dim, batch_size=batch_size
    )
    ndcg, recall = [], []
    for start in range(0, len(wanted), 256):
        scores = query_vectors[start : start + 256] @ docs.T  # (q, D) exact search
        top = scores.topk(min(100, len(doc_ids)), dim=1).indices
        for qid, row in zip(wanted[start : start + 256], top.tolist(), strict=True):
            ranked = [doc_ids[i] for i in row]
            relevant = {d: 1 for d in qrels[qid]}
            ndcg.append(ndcg_at_k(ranked, relevant))
            recall.append(recall_at_k(ranked, relevant))
    return {
        "ndcg@10": sum(ndcg) / max(1, len(ndcg)),
        "recall@100": sum(recall) / max(1, len(recall)),
        "queries": len(wanted),
        "documents": len(doc_ids),
    }
