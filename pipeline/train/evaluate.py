"""Retrieval evaluation on a BEIR-layout folder by exact search: nDCG@10, Recall@100, MRR@10 and
MAP@100 as trec_eval computes them (``pytrec_eval``, graded relevance kept, the figures a BEIR
or MTEB table prints), then, with a reranker, nDCG@10 of the embedder's top-k rescored (the
paper's retrieve-then-rerank). A document whose id is the query's own id is never counted as
retrieved (BEIR's ``ignore_identical_ids``: ArguAna and Quora hold each query in the corpus).

Vectors go through the embedding store (pipeline/embed/store.py), keyed by the model folder's
files, so evaluating the same model on the same corpus again encodes only what is new
(another instruction's queries, another subset); a retrained checkpoint at the same path
has new files and misses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..models import model_files_identity
from .beir import load_beir
from .encoder import Encoder

RERANK_DEPTH = (
    20  # documents per query the reranker rescores (the paper reranks the top 100: on a GPU, use it)
)
RERANK_BATCH = 16  # pairs per reranker forward pass


class PairScorer(Protocol):
    def score(self, pairs: list[tuple[str, str]], instruction: str = ...) -> list[float]: ...


DEPTH = 100  # documents kept per query: Recall@100 and MAP@100 read this far


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking with graded gains (trec_eval's form: gain = grade, discount log2(rank + 1))."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def trec_scores(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], prefix: str = ""
) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 and MAP@100 over the queries of ``qrels``, by trec_eval.

    ``run``: query id -> {document id: score} (its top 100). MRR@10 is trec_eval's reciprocal
    rank over each query's top 10; MAP over its top 100. A query with no retrieved document
    scores 0, as trec_eval's ``-c`` does.
    """
    each = per_query_scores(qrels, run)
    count = max(1, len(qrels))
    return {f"{prefix}{name}": sum(each[q][name] for q in qrels) / count for name in MEASURES}


MEASURES = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def per_query_scores(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Query id -> its nDCG@10, Recall@100, MRR@10 and MAP@100 (trec_eval's), as trec_scores averages."""
    import pytrec_eval

    full = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    top10 = {q: dict(sorted(docs.items(), key=lambda x: (-x[1], x[0]))[:10]) for q, docs in full.items()}
    measures = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"})
    found = measures.evaluate({q: docs or {"-": 0.0} for q, docs in full.items()})
    ranks = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(
        {q: docs or {"-": 0.0} for q, docs in top10.items()}
    )
    return {
        q: {
            "ndcg@10": found[q]["ndcg_cut_10"],
            "recall@100": found[q]["recall_100"],
            "mrr@10": ranks[q]["recip_rank"],
            "map@100": found[q]["map_cut_100"],
        }
        for q in qrels
    }


def model_identity(model_path: str, encoder: Encoder) -> str:
    """Names a model's vectors in the store: its files' sizes and times, pooling, length limit."""
    return "|".join([model_files_identity(model_path), encoder.pooling, str(encoder.max_length)])


class StoredEncoder:
    """An Encoder whose full-size vectors are kept in the embedding store; Matryoshka cuts are made after."""

    def __init__(self, encoder: Encoder, identity: str, store_root: Path | None, batch_size: int):
        self.encoder = encoder
        self.batch_size = batch_size
        self.store = None
        if store_root is not None:
            from ..embed.store import EmbeddingStore

            dimension = int(encoder.model.config.hidden_size)
            self.store = EmbeddingStore(Path(store_root), f"encoder|{identity}", dimension)

    def encode(
        self, texts: list[str], role: str, instruction: str | None, dim: int | None, desc: str
    ) -> torch.Tensor:
        progress = tqdm(total=len(texts), desc=desc, unit="text", leave=False)

        def compute(batch: list[str]) -> np.ndarray:
            vectors = self.encoder.encode(batch, instruction, self.batch_size, role=role)
            progress.update(len(batch))
            return vectors.float().numpy()

        if self.store is not None:
            # the instruction or the model's prompt is part of the text the model reads: part of the key
            prefix = instruction or self.encoder.prompt(role)
            vectors = self.store.encode(texts, f"{role}\x1f{prefix}", compute)
        else:
            vectors = compute(texts)
        progress.close()
        out = torch.from_numpy(np.asarray(vectors, dtype=np.float32))  # (N, H)
        if dim is not None:
            out = out[:, :dim]  # truncate, then normalise: the Matryoshka embedding
        return torch.nn.functional.normalize(out, dim=-1)

    @property
    def computed(self) -> int:
        return self.store.computed if self.store is not None else -1


def rerank(
    reranker: PairScorer, query: str, ranked: list[str], corpus: dict[str, str], depth: int, instruction: str
) -> list[str]:
    """``ranked`` with its first ``depth`` documents reordered by the reranker (ties keep their order)."""
    head = ranked[:depth]
    scores: list[float] = []
    for start in range(0, len(head), RERANK_BATCH):
        pairs = [(query, corpus[d]) for d in head[start : start + RERANK_BATCH]]
        scores.extend(reranker.score(pairs, instruction=instruction))
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    return [head[i] for i in order] + ranked[depth:]


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
    store_root: Path | None = None,
    reranker: PairScorer | None = None,
    rerank_depth: int = RERANK_DEPTH,
    rerank_instruction: str | None = None,
    per_query: bool = False,
) -> dict:
    """Mean nDCG@10, Recall@100, MRR@10 and MAP@100 over the queries with relevance labels (or a subset).

    With ``reranker``, also the nDCG@10 after it rescores each query's top ``rerank_depth``. With
    ``per_query``, also each query's scores (``per_query``: query id -> measure -> score), which
    paired comparisons of two models resample.
    """
    corpus, queries, qrels = load_beir(benchmark, split, with_title=True)
    wanted = [q for q in sorted(qrels) if q in queries and (query_ids is None or q in query_ids)]
    encoder = encoder or Encoder(model_path, max_length=max_length)
    encoder.eval()
    stored = StoredEncoder(encoder, model_identity(model_path, encoder), store_root, batch_size)
    doc_ids = sorted(corpus)
    docs = stored.encode([corpus[d] for d in doc_ids], "passage", None, dim, "corpus")  # (D, dim)
    documents_computed = stored.computed
    query_vectors = stored.encode([queries[q] for q in wanted], "query", instruction, dim, "queries")
    queries_computed = stored.computed - documents_computed if stored.store is not None else -1

    run = exact_search(query_vectors, docs, doc_ids, wanted)
    relevant = {qid: qrels[qid] for qid in wanted}
    result: dict = trec_scores(relevant, run)
    if reranker is not None:
        from .losses.reranker import DEFAULT_INSTRUCTION

        task = rerank_instruction or instruction or DEFAULT_INSTRUCTION
        reranked = {}
        for qid in tqdm(wanted, desc="reranking", unit="query", leave=False):
            ranked = sorted(run[qid], key=lambda d: (-run[qid][d], d))
            again = rerank(reranker, queries[qid], ranked, corpus, rerank_depth, task)
            reranked[qid] = {doc: float(len(again) - i) for i, doc in enumerate(again)}
        result["reranked_ndcg@10"] = trec_scores(relevant, reranked)["ndcg@10"]
        result["rerank_depth"] = rerank_depth
    # texts the model encoded in this call; the rest came from the store (-1: no store)
    counts = {"encoded_documents": documents_computed, "encoded_queries": queries_computed}
    result.update({"queries": len(wanted), "documents": len(doc_ids), **counts})
    if per_query:
        result["per_query"] = per_query_scores(relevant, run)
    return result


def exact_search(
    query_vectors: torch.Tensor, docs: torch.Tensor, doc_ids: list[str], wanted: list[str]
) -> dict[str, dict[str, float]]:
    """Query id -> its top ``DEPTH`` documents by cosine (the vectors are normalised), exactly."""
    run: dict[str, dict[str, float]] = {}
    position = {d: i for i, d in enumerate(doc_ids)}
    for start in range(0, len(wanted), 256):
        scores = query_vectors[start : start + 256] @ docs.T  # (q, D) exact search
        for row, qid in enumerate(wanted[start : start + 256]):
            if qid in position:  # the query's own document is not a hit (BEIR's ignore_identical_ids)
                scores[row, position[qid]] = float("-inf")
        top = scores.topk(min(DEPTH, len(doc_ids)), dim=1)
        for qid, values, indices in zip(
            wanted[start : start + 256], top.values.tolist(), top.indices.tolist(), strict=True
        ):
            run[qid] = {doc_ids[i]: v for v, i in zip(values, indices, strict=True) if v != float("-inf")}
    return run


def evaluate_targets(
    models: list[str], targets: dict[str, tuple[str, str, bool]], mteb_task=None, **options
) -> Iterator[str]:
    """``synth eval``'s output lines: for one model, each target's scores as a JSON object; for
    several, each target's table of scores and differences to the first model (with paired
    bootstrap 95% intervals, ``compare.py``), then the same as one JSON object."""
    from .compare import compare, comparison_table

    for target, (folder, split, mteb_applies) in targets.items():
        task = mteb_task if mteb_applies else None
        results = {
            m: evaluate_benchmark(m, folder, split, mteb_task=task, per_query=True, **options) for m in models
        }
        differences = compare(results) if len(models) > 1 else {}
        for result in results.values():
            del result["per_query"]  # the table and the JSON show the means
        if len(models) == 1:
            yield json.dumps(results[models[0]])
            continue
        yield comparison_table(target, results, differences)
        yield json.dumps({"benchmark": target, "models": results, "differences": differences})


def evaluate_benchmark(
    model: str,
    benchmark: str,
    split: str,
    *,
    reranker: str | None = None,
    mteb_task=None,
    **options,
) -> dict:
    """``synth eval``: ``evaluate`` with a reranker loaded from its folder (``reranker``), and with
    mteb's own scores beside ours when ``mteb_task`` (from ``mteb_task.retrieval_task``) is given."""
    scorer = None
    if reranker:
        from .reranker_trainer import Reranker

        scorer = Reranker(reranker)
    result = evaluate(model, benchmark, split=split, reranker=scorer, **options)
    if reranker:
        result["reranker"] = reranker
    if mteb_task is not None:
        from .mteb_task import evaluate_mteb

        result["mteb"] = evaluate_mteb(
            model, mteb_task, benchmark, split, instruction=options.get("instruction")
        )
    return result
