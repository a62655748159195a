"""What a trained model still gets wrong on its own training rows, and where in the corpus.

``analyse_failures`` takes a finished round (its run folder with ``splits/train``), the round's
model and the eval corpus (the run's pool, as ``synth split`` wrote it), and for every sampled
train-side question row (never the frozen eval side), or every row of a ``probe`` the model
never trained on (``synth loop --pairs``: the pairs no round has read), finds the rank of its
positive among the corpus under the model: 1 plus the number of corpus passages that score above the positive
(the positive's own text excluded). A row fails when that rank is above ``top``.

Failure rates are given per slice, each with its row count and a 95% Wilson interval, so a slice
of three rows is not mistaken for a weak one:

- ``neighbourhood``: clusters of the corpus under the model (k-means over the passage vectors;
  a row belongs to the cluster of its positive);
- ``task_type``, ``language_pair`` (query language -> passage language), ``question_type``,
  ``difficulty``. Personas are free text with no groups in the collection: they are not sliced.

For the next round's plan (``aim/plan.py``) it also keeps the corpus passages nearest to the
failing positives that no analysed row already uses and no eval query is answered by: the
``candidates``, each with how many failing rows point at it.

Memory holds the sampled rows (``max_rows``), the eval corpus's vectors (as ``synth eval`` does)
and one block of scores at a time.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .. import schema as S
from ..aim.plan import document_of
from ..config import QUESTION_TASK_TYPES
from ..run.folder import RunFolder, shards_under

TOP = 10  # a positive ranked below this fails (nDCG@10's cut)
MAX_ROWS = 5000
NEIGHBOURS = 8  # corpus passages kept per failing positive for the next round's plan
SLICES = ("neighbourhood", "task_type", "language_pair", "question_type", "difficulty")
COLUMNS = [S.ID, S.QUERY, S.POSITIVE, S.INSTRUCTION, S.TASK_TYPE, S.LANGUAGE, S.PASSAGE_LANGUAGE]
COLUMNS += [S.QUESTION_TYPE, S.DIFFICULTY, S.SOURCE_ID, S.PASSAGE_ID]
BLOCK = 256


def sampled_rows(run: str | Path, max_rows: int, seed: int) -> list[dict]:
    """The train side's question rows; past ``max_rows``, those whose hash of (seed, id) is lowest."""
    rows = []
    for shard in shards_under(RunFolder(run).train_split_folder):
        table = pq.read_table(shard)
        present = [c for c in COLUMNS if c in table.column_names]
        rows += [r for r in table.select(present).to_pylist() if r[S.TASK_TYPE] in QUESTION_TASK_TYPES]
        if len(rows) > 2 * max_rows:  # keep memory at the sample's size while reading
            rows = _lowest(rows, max_rows, seed)
    return sorted(_lowest(rows, max_rows, seed), key=lambda r: r[S.ID])


def _lowest(rows: list[dict], most: int, seed: int) -> list[dict]:
    def draw(row: dict) -> str:
        return hashlib.sha256(f"{seed}\x1f{row[S.ID]}".encode()).hexdigest()

    return sorted(rows, key=draw)[:most]


def wilson(failed: int, rows: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a failure rate: honest for small slices."""
    if rows == 0:
        return 0.0, 1.0
    p = failed / rows
    centre = (p + z * z / (2 * rows)) / (1 + z * z / rows)
    half = z * math.sqrt(p * (1 - p) / rows + z * z / (4 * rows * rows)) / (1 + z * z / rows)
    return max(0.0, centre - half), min(1.0, centre + half)


def slice_table(values: list[str], failed: list[bool]) -> list[dict]:
    """One entry per value: rows, failures, rate and interval; highest rate first (ties: more rows)."""
    rows, fails = Counter(values), Counter(v for v, f in zip(values, failed, strict=True) if f)
    table = []
    for value, n in rows.items():
        low, high = wilson(fails[value], n)
        entry = {"value": value, "rows": n, "failed": fails[value], "rate": round(fails[value] / n, 4)}
        table.append({**entry, "low": round(low, 4), "high": round(high, 4)})
    return sorted(table, key=lambda e: (-e["rate"], -e["rows"], e["value"]))


def clusters_of(docs: np.ndarray, seed: int) -> np.ndarray:
    """k-means centroids of the corpus vectors: about one cluster per 50 passages, 2 to 64."""
    import faiss

    k = int(min(64, max(2, round(len(docs) / 50))))
    k = min(k, len(docs))
    kmeans = faiss.Kmeans(docs.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(np.ascontiguousarray(docs, dtype=np.float32))
    return kmeans.centroids


def analyse_failures(
    run: str | Path,
    model: str,
    eval_split: str | Path,
    *,
    seed: int,
    top: int = TOP,
    max_rows: int = MAX_ROWS,
    store_root: Path | None = None,
    batch_size: int = 64,
    documents: set[str] | None = None,
    probe: list[dict] | None = None,
) -> dict:
    """The failure analysis of ``run``'s train side under ``model`` (see the module's docstring).

    ``documents``: the documents a next round can draw (with ``--pairs``, those a pair names);
    candidates of other documents are left out. None: every corpus passage may be one.
    ``probe``: rows the model never trained on, analysed instead of the train side (with
    ``--pairs``: the pairs a next round may read). A model ranks the rows it was just trained on
    first (measured: 0 of 113 SciFact rows failed after one epoch), so only such rows show what it
    has not learned; a failing probe row's own document is then the first candidate.
    """
    from .beir import load_beir, read_jsonl_texts
    from .encoder import Encoder
    from .evaluate import StoredEncoder, model_identity
    from .split import QRELS_SPLIT, text_id

    rows = sampled_rows(run, max_rows, seed) if probe is None else _lowest(probe, max_rows, seed)
    if not rows:  # nothing to learn from: a plan from this keeps the configured distributions
        empty = {name: [] for name in SLICES}
        return {"model": model, "top": top, "rows": 0, "failed": 0, "rate": 0.0, "slices": empty}
    corpus = read_jsonl_texts(Path(eval_split) / "corpus.jsonl")
    _, _, qrels = load_beir(eval_split, QRELS_SPLIT)
    answers_eval = {doc for relevant in qrels.values() for doc in relevant}
    encoder = Encoder(model)
    encoder.eval()
    stored = StoredEncoder(encoder, model_identity(model, encoder), store_root, batch_size)
    doc_ids = sorted(corpus)
    docs = stored.encode([corpus[d] for d in doc_ids], "passage", None, None, "corpus").numpy()
    positives = stored.encode([r[S.POSITIVE] for r in rows], "passage", None, None, "positives").numpy()
    queries = _queries(stored, rows)
    own = {text_id(corpus[d]): i for i, d in enumerate(doc_ids)}
    positive_at = [own.get(text_id(r[S.POSITIVE]), -1) for r in rows]
    ranks = _ranks(queries, positives, docs, positive_at)
    failed = [rank > top for rank in ranks]
    centroids = clusters_of(docs, seed)
    neighbourhood = [str(int(c)) for c in (positives @ centroids.T).argmax(axis=1)]
    used = {i for i in positive_at if i >= 0}
    excluded = used | {i for i, d in enumerate(doc_ids) if d in answers_eval}
    if documents is not None:
        excluded |= {i for i, d in enumerate(doc_ids) if document_of(d) not in documents}
    candidates = _candidates(positives[np.array(failed)], docs, excluded, doc_ids)
    if probe is not None:  # the pairs that fail are the first to draw: their documents lead
        own_failing = Counter(f"{r[S.SOURCE_ID]}#probe" for r, f in zip(rows, failed, strict=True) if f)
        candidates = [{"passage_id": p, "failing_rows": n} for p, n in own_failing.most_common()] + candidates
    values = {
        "neighbourhood": neighbourhood,
        "task_type": [r[S.TASK_TYPE] for r in rows],
        "language_pair": [f"{r[S.LANGUAGE]}->{r.get(S.PASSAGE_LANGUAGE) or r[S.LANGUAGE]}" for r in rows],
        "question_type": [r.get(S.QUESTION_TYPE) or "(none)" for r in rows],
        "difficulty": [r.get(S.DIFFICULTY) or "(none)" for r in rows],
    }
    return {
        "model": model,
        "top": top,
        "rows": len(rows),
        "analysed": "probe" if probe is not None else "train",
        "failed": sum(failed),
        "rate": round(sum(failed) / len(rows), 4),
        "median_rank": float(np.median(ranks)),
        "corpus_passages": len(doc_ids),
        "clusters": int(len(centroids)),
        "slices": {name: slice_table(values[name], failed) for name in SLICES},
        "candidates": candidates,  # for aim/plan.py
        "failing_rows": [
            {"id": r[S.ID], "rank": rank, "neighbourhood": n, "source_id": r.get(S.SOURCE_ID)}
            for r, rank, n, f in zip(rows, ranks, neighbourhood, failed, strict=True)
            if f
        ],
    }


def _queries(stored, rows: list[dict]) -> np.ndarray:
    """Each row's query vector, read with its own instruction (rows of one instruction encoded together)."""
    by_instruction: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_instruction[row.get(S.INSTRUCTION) or ""].append(i)
    out = None
    for instruction, indices in sorted(by_instruction.items()):
        texts = [rows[i][S.QUERY] for i in indices]
        vectors = stored.encode(texts, "query", instruction or None, None, "queries").numpy()
        if out is None:
            out = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
        out[indices] = vectors
    return out


def _ranks(queries: np.ndarray, positives: np.ndarray, docs: np.ndarray, positive_at: list[int]) -> list[int]:
    """1 + the corpus passages scoring above each row's positive (its own copy in the corpus not counted)."""
    ranks = []
    for start in range(0, len(queries), BLOCK):
        q = queries[start : start + BLOCK]
        scores = q @ docs.T
        own = (q * positives[start : start + BLOCK]).sum(axis=1)
        for row, at in enumerate(positive_at[start : start + BLOCK]):
            if at >= 0:
                scores[row, at] = -np.inf
        ranks += (1 + (scores > own[:, None]).sum(axis=1)).astype(int).tolist()
    return ranks


def _candidates(failing: np.ndarray, docs: np.ndarray, excluded: set[int], doc_ids: list[str]) -> list[dict]:
    """The corpus passages nearest to the failing positives, neither used nor an eval answer; the
    most pointed-at first."""
    pointed: Counter = Counter()
    for start in range(0, len(failing), BLOCK):
        scores = failing[start : start + BLOCK] @ docs.T
        depth = min(len(doc_ids), NEIGHBOURS + len(excluded))
        if depth < len(doc_ids):  # the nearest ``depth``, then in order
            part = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
            nearest = np.take_along_axis(part, order, axis=1)
        else:
            nearest = np.argsort(-scores, axis=1)
        for row in nearest:
            kept = [int(i) for i in row if int(i) not in excluded][:NEIGHBOURS]
            pointed.update(kept)
    ranked = sorted(pointed.items(), key=lambda item: (-item[1], doc_ids[item[0]]))
    return [{"passage_id": doc_ids[i], "failing_rows": n} for i, n in ranked]
