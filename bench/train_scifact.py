"""Does fine-tuning on rows in our Parquet schema raise nDCG@10? SciFact, all-MiniLM-L6-v2, CPU.

1. SciFact's train queries (those with qrels) are split by a fixed seed into a training part
   (80%) and a held-out part (20%); the held-out ids are written beside the results.
2. Training rows in the pipeline's schema: query = the claim, positive = its relevant
   abstract, negatives mined by the pipeline's own steps (MineNegatives from a pool of the
   whole corpus, then the positive-aware NegativeMargin), written as a run folder's shards.
3. nDCG@10 / Recall@100 of the base model on the held-out queries, `synth train`, then the
   same evaluation of the fine-tuned model.

    .venv/bin/python bench/train_scifact.py --out outputs/scifact-train

Pass --data to train on another run folder instead (e.g. the output of `synth generate`
over the same corpus) so human and generated queries can be compared on the same split.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute it"
BENCH = Path(__file__).resolve().parents[2] / "shared/data/corpora/scifact_en"


def split_queries(qrels: dict, seed: int) -> tuple[list[str], list[str]]:
    ids = sorted(qrels)
    random.Random(seed).shuffle(ids)
    cut = int(len(ids) * 0.8)
    return sorted(ids[:cut]), sorted(ids[cut:])


def human_row(qid: str, doc: str, query: str, passage: str) -> dict:
    """One SciFact claim and a relevant abstract as a row of the pipeline's schema."""
    from pipeline import schema as S

    return {
        S.ID: f"{qid}-{doc}",
        S.QUERY: query,
        S.POSITIVE: passage,
        S.TASK_TYPE: "retrieval",
        S.LANGUAGE: "en",
        S.PASSAGE_LANGUAGE: "en",
        S.SOURCE_ID: doc,
        S.PASSAGE_ID: doc,
        S.MODEL: "human (SciFact qrels)",
        S.PROMPT_HASH: "",
    }


def build_rows(corpus, queries, qrels, train_ids, out: Path, embedder, keep=None, seed=0) -> int:
    from pipeline import schema as S
    from pipeline.config import NegativesConfig
    from pipeline.embed.pool import PassagePool
    from pipeline.filters.margin import NegativeMargin
    from pipeline.generate.negatives import MineNegatives
    from pipeline.models import cache_root
    from pipeline.readers.passages import Passage
    from pipeline.run.shards import data_records, write_table

    doc_ids = sorted(corpus)
    pool = PassagePool.build(
        lambda: (Passage(d, d, None, corpus[d], "en") for d in doc_ids), embedder, cache_root() / "pools"
    )
    rows = [
        human_row(qid, doc, queries[qid], corpus[doc]) | {S.INSTRUCTION: INSTRUCTION}
        for qid in train_ids
        for doc in sorted(qrels[qid])
        if doc in corpus
    ]
    config = NegativesConfig(mined_count=3, llm_count=0)
    rows = MineNegatives(embedder, pool, config)(rows).kept
    rows = NegativeMargin(embedder, config)(rows).kept
    rows = [r for r in rows if r[S.NEGATIVES]]
    if keep is not None:  # as many human rows as a generated run has, for a like-for-like comparison
        rows = random.Random(seed).sample(rows, min(keep, len(rows)))
    write_table(data_records(rows), S.ROW_SCHEMA, out / "data" / "part-00000-00000.parquet")
    return len(rows)


def synth(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/scifact-train"))
    parser.add_argument("--benchmark", type=Path, default=BENCH)
    parser.add_argument("--data", type=Path, default=None, help="train on this run folder instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument(
        "--human-rows", type=int, default=None, help="keep only this many human rows (seeded sample)"
    )
    parser.add_argument("--no-base", action="store_true", help="skip evaluating the base model again")
    args = parser.parse_args()

    from pipeline.embed.embedder import Embedder
    from pipeline.models import resolve_embedder
    from pipeline.train.beir import load_beir

    started = time.perf_counter()
    corpus, queries, qrels = load_beir(args.benchmark, "train", with_title=True)
    train_ids, heldout_ids = split_queries(qrels, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heldout_ids.txt").write_text("\n".join(heldout_ids) + "\n")
    base = resolve_embedder(None)
    data = args.data
    if data is None:
        data = args.out / "human"
        embedder = Embedder(base.path, base.name)
        count = build_rows(corpus, queries, qrels, train_ids, data, embedder, args.human_rows, args.seed)
        print(f"{count} training rows from {len(train_ids)} queries; {len(heldout_ids)} held out")
    common = [
        "--benchmark",
        str(args.benchmark),
        "--split",
        "train",
        "--query-ids",
        str(args.out / "heldout_ids.txt"),
    ]
    before = None if args.no_base else json.loads(synth("eval", "--model", base.path, *common))
    model_dir = args.out / f"model-{data.name}"
    print(
        synth(
            "train",
            "--data",
            str(data),
            "--model",
            base.path,
            "--out",
            str(model_dir),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            "32",
            "--lr",
            str(args.lr),
        )
    )
    after = json.loads(synth("eval", "--model", str(model_dir), *common))
    result = {
        "data": str(data),
        "epochs": args.epochs,
        "lr": args.lr,
        "before": before,
        "after": after,
        "seconds": round(time.perf_counter() - started),
    }
    (args.out / f"result-{data.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
