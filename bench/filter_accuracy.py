"""How good are the cosine filter and the LLM judge at telling relevant pairs from non-relevant ones?

Both filters are treated as binary classifiers on human-labelled data in BEIR
layout. For each sampled query:
- one true pair: the query and a document its qrels mark relevant;
- one random negative: a document drawn from the corpus sample;
- one hard negative: the corpus-sample document the embedder ranks highest
  among those the qrels do not mark relevant (qrels are sparse, so a few of
  these may in fact be relevant: the numbers against them are a lower bound).

Reported per dataset and filter: precision and recall of "relevant" at the
default setting, the score distribution of each pair kind, and the threshold
each filter would need for 90% precision.

    .venv/bin/python bench/filter_accuracy.py --queries 100 --json bench/results/filter_accuracy.json

Needs ../shared/data/corpora (or --data). Uses the run defaults for the
models unless --model / --embedder are given.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

DATASETS = {"scifact_en": "train", "cmrc2018_zh": "test"}
DOC_CHARS = 1200  # about the pipeline's passage budget; long abstracts are cut like passages would be


def sample_pairs(folder: Path, split: str, n_queries: int, pool_docs: int, seed: int, embedder):
    from pipeline.train.beir import load_beir

    corpus, queries, qrels = load_beir(folder, split)
    rng = random.Random(seed)
    qids = sorted(q for q in qrels if q in queries and any(d in corpus for d in qrels[q]))
    qids = rng.sample(qids, min(n_queries, len(qids)))
    positives = {q: sorted(d for d in qrels[q] if d in corpus)[0] for q in qids}
    pool = sorted(set(positives.values()) | set(rng.sample(sorted(corpus), min(pool_docs, len(corpus)))))
    pool_texts = [corpus[d][:DOC_CHARS] for d in pool]
    pool_vectors = embedder.encode(pool_texts, show_progress=True)
    query_vectors = embedder.encode([queries[q] for q in qids], role="query")
    pairs = []  # (kind, query, document)
    for qid, qvec in zip(qids, query_vectors, strict=True):
        relevant = qrels[qid]
        pairs.append(("positive", queries[qid], corpus[positives[qid]][:DOC_CHARS]))
        random_doc = rng.choice([d for d in pool if d not in relevant])
        pairs.append(("random", queries[qid], corpus[random_doc][:DOC_CHARS]))
        order = np.argsort(-(pool_vectors @ qvec))
        hard = next(pool[i] for i in order if pool[i] not in relevant)
        pairs.append(("hard", queries[qid], corpus[hard][:DOC_CHARS]))
    return pairs


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((predicted & truth).sum())
    return tp / max(1, int(predicted.sum())), tp / max(1, int(truth.sum()))


def threshold_for_precision(scores: np.ndarray, truth: np.ndarray, target: float = 0.9):
    """Lowest threshold t such that 'score >= t' reaches the target precision, and its recall."""
    for t in np.unique(scores):
        predicted = scores >= t
        precision, recall = precision_recall(predicted, truth)
        if precision >= target and predicted.sum() >= 5:
            return float(t), precision, recall
    return None, None, None


def summarise(kinds, cos, judge, cos_threshold, judge_min):
    truth = kinds == "positive"
    out = {"pairs": int(len(kinds)), "positives": int(truth.sum())}
    classifiers = {
        f"cosine > {cos_threshold}": cos > cos_threshold,
        f"judge >= {judge_min}": judge >= judge_min,
        "both": (cos > cos_threshold) & (judge >= judge_min),
    }
    for name, predicted in classifiers.items():
        precision, recall = precision_recall(predicted, truth)
        hard_only = kinds != "random"
        hard_precision, _ = precision_recall(predicted[hard_only], truth[hard_only])
        out[name] = {"precision": precision, "recall": recall, "precision_vs_hard": hard_precision}
    out["distributions"] = {
        kind: {
            "cosine_quantiles_10_50_90": [
                round(float(q), 3) for q in np.quantile(cos[kinds == kind], [0.1, 0.5, 0.9])
            ],
            "judge_counts_0_1_2_3": [int(((kinds == kind) & (judge == g)).sum()) for g in range(4)],
            "judge_invalid": int(((kinds == kind) & (judge < 0)).sum()),
        }
        for kind in ("positive", "hard", "random")
    }
    t, p, r = threshold_for_precision(cos, truth)
    out["cosine_for_90_precision"] = {"threshold": t, "precision": p, "recall": r}
    t, p, r = threshold_for_precision(judge.astype(float), truth)
    out["judge_for_90_precision"] = {"min_score": t, "precision": p, "recall": r}
    return out


def markdown(results: dict, setup: dict) -> str:
    lines = [
        f"Generator/judge: {setup['judge']}; embedder: {setup['embedder']}; "
        f"{setup['queries']} queries per dataset, seed {setup['seed']}.",
        "",
        "| dataset | filter | precision | recall | precision vs hard negatives only |",
        "|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for key, value in res.items():
            if (
                isinstance(value, dict)
                and "precision" in value
                and "recall" in value
                and "precision_vs_hard" in value
            ):
                lines.append(
                    f"| {name} | {key} | {value['precision']:.2f} | {value['recall']:.2f} | "
                    f"{value['precision_vs_hard']:.2f} |"
                )
    lines += [
        "",
        "| dataset | pair kind | cosine p10 / p50 / p90 | judge grades 0/1/2/3 (invalid) |",
        "|---|---|---|---|",
    ]
    for name, res in results.items():
        for kind, dist in res["distributions"].items():
            q = dist["cosine_quantiles_10_50_90"]
            g = dist["judge_counts_0_1_2_3"]
            grades = "/".join(map(str, g)) + f" ({dist['judge_invalid']})"
            lines.append(f"| {name} | {kind} | {q[0]} / {q[1]} / {q[2]} | {grades} |")
    lines += [
        "",
        "| dataset | cosine threshold for 90% precision (recall) | judge grade for 90% precision (recall) |",
        "|---|---|---|",
    ]
    for name, res in results.items():
        c, j = res["cosine_for_90_precision"], res["judge_for_90_precision"]
        cos_cell = (
            f"{c['threshold']:.3f} ({c['recall']:.2f})" if c["threshold"] is not None else "not reachable"
        )
        judge_cell = (
            f">= {j['min_score']:.0f} ({j['recall']:.2f})" if j["min_score"] is not None else "not reachable"
        )
        lines.append(f"| {name} | {cos_cell} | {judge_cell} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/corpora"
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--pool-docs", type=int, default=800, help="random corpus documents to mine from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="judge LLM (default: the run default)")
    parser.add_argument("--embedder", default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the full results here")
    parser.add_argument("--no-judge", action="store_true", help="score the embedder only (no LLM)")
    parser.add_argument("--threshold", type=float, default=None, help="cosine threshold to report")
    args = parser.parse_args()

    from pipeline.config import JudgeConfig, ModelConfig, RunConfig
    from pipeline.embed.embedder import Embedder
    from pipeline.engine.factory import get_engine
    from pipeline.filters.judge import judgement_chat
    from pipeline.generate.prompts import PromptLibrary
    from pipeline.generate.replies import JudgeOutput
    from pipeline.models import resolve_embedder, resolve_generator

    defaults = RunConfig()
    emb_model = resolve_embedder(args.embedder)
    embedder = Embedder(emb_model.path, emb_model.name)
    judge_model = None if args.no_judge else resolve_generator(args.model)
    engine = None if args.no_judge else get_engine(judge_model, ModelConfig(), seed=args.seed)
    threshold = emb_model.cosine_threshold if args.threshold is None else args.threshold
    prompts = PromptLibrary()
    judge_config: JudgeConfig = defaults.filters.judge
    results, started = {}, time.perf_counter()
    for name, split in DATASETS.items():
        folder = args.data / name
        if not folder.exists():
            print(f"skip {name}: {folder} not found")
            continue
        pairs = sample_pairs(folder, split, args.queries, args.pool_docs, args.seed, embedder)
        kinds = np.array([k for k, _, _ in pairs])
        q = embedder.encode([p[1] for p in pairs], role="query")
        d = embedder.encode([p[2] for p in pairs])
        cos = np.einsum("nd,nd->n", q, d)
        if engine is None:
            judge = np.full(len(pairs), -1)
        else:
            chats = [judgement_chat(prompts, query, doc) for _, query, doc in pairs]
            generations = engine.generate(chats, JudgeOutput, judge_config.max_tokens, temperature=0.0)
            judge = np.array([g.parsed.score if g.parsed is not None else -1 for g in generations])
        results[name] = summarise(kinds, cos, judge, threshold, judge_config.min_positive_score)
        # the raw scores, so any other threshold can be read off later without encoding again
        results[name]["cosines"] = {k: np.round(cos[kinds == k], 4).tolist() for k in np.unique(kinds)}
    setup = {
        "judge": judge_model.name if judge_model else "none",
        "embedder": emb_model.name,
        "queries": args.queries,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(markdown(results, setup))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=2))


if __name__ == "__main__":
    main()
