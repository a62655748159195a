"""Does memory grow with the corpus? Peak RSS of `synth generate` over 1k, 10k and 100k passages.

Each size runs in a fresh process on a generated English corpus, with a fast
fake engine (well-formed answers built from the passage) and a hashing stand-in
for the sentence embedder, so the run measures what the pipeline itself holds
(reading, chunks, steps, dedup state, stats, writers), not model weights or
model speed. Everything else is the default configuration: every filter, LLM
and mined negatives, the mining pool.

    .venv/bin/python bench/memory.py --sizes 1000,10000,100000 --json bench/results/memory.json
    .venv/bin/python bench/memory.py --quick      # 1k and 10k passages

With ``--limit N`` each run generates rows from N passages only while mining
negatives over the whole corpus: what the mining pool (passages on disk, vectors
memory-mapped, the HNSW index above 50k passages) and the embedding store cost
as the corpus grows. The stand-in embedder is 384-dimensional, as MiniLM and e5
are, and every vector goes through the embedding store; each run gets an empty
cache folder, so the pool and its index are built inside the measured run.

    .venv/bin/python bench/memory.py --sizes 10000,100000 --limit 256 --json bench/results/memory_mining.json

Reported: peak RSS per size, and the ratio of the largest to the smallest
(goal: at most 1.2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS as VOCABULARY  # noqa: E402


def write_corpus(path: Path, passages: int, seed: int = 0) -> None:
    """``passages`` distinct documents of 60-120 words, one per line."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as sink:
        for i in range(passages):
            words = rng.choices(VOCABULARY, k=rng.randint(60, 120))
            text = f"Document {i} is about {words[0]} and {words[1]}. " + " ".join(words) + "."
            sink.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")


def fake_answer(prompt: str, output) -> str:
    """Schema-valid answers that pass the filters: an on-topic query, an off-topic negative."""
    task = prompt.split("### Your task")[-1]
    name = output.__name__
    if name == "ConfigureOutput":
        return json.dumps({"character": 1})
    if name == "QueryOutput":
        passage = next(line for line in task.splitlines() if line.startswith("Passage"))
        words = passage.split(": ", 1)[1].split()  # "Document 12 is about ..."
        return json.dumps({"query": "what about " + " ".join(words[:2] + words[4:16:2])})
    if name == "NegativesOutput":
        digest = hashlib.sha256(task.encode()).hexdigest()[:8]
        return json.dumps({"negatives": [f"The weather report {digest} predicts light rain in the hills."]})
    if name == "JudgeOutput":  # the positive is the passage of the document the query names
        query = next(line for line in task.splitlines() if line.startswith("Query: "))
        passage = next(line for line in task.splitlines() if line.startswith("Passage: "))
        named = " ".join(query.split()[3:5])  # "Document 12"
        return json.dumps({"reason": "stand-in", "score": 3 if f"{named} " in passage else 0})
    raise ValueError(f"no fake answer for {name}")


def hashed_vectors(texts, dim: int = 384):
    """A stand-in embedder: unit vectors from word hashes (shared words, similar vectors)."""
    import numpy as np

    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest()[:6], 16) % dim] += 1.0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    return out


def child(corpus: Path, out: Path, embedder: str, limit: int | None) -> None:
    """One run in this process; prints its peak RSS."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from pipeline.config import load_config
    from pipeline.embed.embedder import Embedder
    from pipeline.engine.base import ChatEngine, parse_output
    from pipeline.executors import run_generate

    class FastFakeEngine(ChatEngine):
        model_name = "fast-fake-engine"

        def generate(self, chats, output, max_tokens, temperature=None, desc=None, seeds=None):
            return [parse_output(fake_answer(chat[-1]["content"], output), output) for chat in chats]

    # the model is replaced, not the store around it: vectors are written, read back and reused
    Embedder._compute = lambda self, texts, role, show_progress=False: hashed_vectors(list(texts))
    config = load_config(
        None,
        [
            f"corpus.path={corpus}",
            f"output.out_dir={out}",
            f"models.embedder={embedder}",
            "models.embedder_languages=['*']",
            "filters.judge.enabled=true",
            # the hashing stand-in scores on its own scale: a threshold that keeps on-topic pairs
            "filters.cosine.threshold=0.2",
        ],
    )
    config.models.generator = "fast-fake-engine"
    config.limit = limit
    started = time.perf_counter()
    result = run_generate(config, engine=FastFakeEngine())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        "MEMORY "
        + json.dumps(
            {
                "peak_rss_mib": round(peak_kib / 1024, 1),
                "rows_out": result.stats.rows_out,
                "timings": {k: round(v, 1) for k, v in result.stats.timings.items()},
                "seconds": round(time.perf_counter() - started, 1),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--quick", action="store_true", help="1k and 10k passages")
    parser.add_argument("--limit", type=int, default=0, help="passages to generate from (0: all)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2], int(args.child[3]) or None)
        return
    sizes = [1000, 10000] if args.quick else [int(x) for x in args.sizes.split(",")]
    from pipeline.models import resolve_embedder

    embedder = resolve_embedder(None).path  # loaded for its tokenizer and config; encoding is hashed
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    results = {}
    for size in sizes:
        corpus = work / f"corpus-{size}.jsonl"
        write_corpus(corpus, size)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(corpus),
                str(work / f"out-{size}"),
                embedder,
                str(args.limit),
            ],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "HF_HUB_OFFLINE": "1",  # no hub look-ups
                "TRANSFORMERS_OFFLINE": "1",
                "SYNTH_CACHE": str(work / f"cache-{size}"),  # the store and the pool start empty
            },
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("MEMORY ")), None)
        if line is None:
            sys.exit(f"run over {size} passages failed:\n{done.stderr[-3000:]}")
        results[size] = json.loads(line[len("MEMORY ") :])
        print(
            f"{size:>7} passages: peak RSS {results[size]['peak_rss_mib']:.0f} MiB, "
            f"{results[size]['rows_out']} rows, {results[size]['seconds']:.0f} s",
            flush=True,
        )
    ratio = results[sizes[-1]]["peak_rss_mib"] / results[sizes[0]]["peak_rss_mib"]
    report = {"limit": args.limit or None, "runs": results, "ratio_largest_to_smallest": round(ratio, 3)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"peak RSS ratio {sizes[-1]} / {sizes[0]} passages: {ratio:.3f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
