"""What `synth loop` gives on human pairs: SciFact's training questions through `--pairs`, MiniLM, CPU.

SciFact (../shared/data/corpora/scifact_en: 5,183 abstracts, the train qrels: 809 claims with
their supporting abstracts) becomes a pairs file (claim, abstract id). The loop runs every round
on it: the pairs go through the gate (language, dedup, copy check, mined negatives, margin; the
cosine filter off, see --gate-cosine), round 1 holds out 20% of its documents as the frozen eval
split, each round trains all-MiniLM-L6-v2 further, and base, rounds and their merge are scored on
the same held-out claims against the pool (sampled to --eval-documents abstracts, every positive
kept), with paired bootstrap 95% intervals.

Then, at equal rows, what mined negatives with the margin bring over in-batch negatives alone:
the base model trained on round 1's training rows with `negatives=0` (the loss then sees only the
other rows of its batch), compared with round 1's model.

    .venv/bin/python bench/loop.py --rounds 2 --rows-per-round 400 --epochs 1   # about 30 min
    .venv/bin/python bench/loop.py --quick --out outputs/bench-loop-q           # 2 rounds of 100

`--data` takes any BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv); `--lang` its language.
Figures: docs/training.md, "The loop on human pairs"; JSON in bench/results/loop.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared/data/corpora/scifact_en"


def write_pairs(data: Path, path: Path) -> int:
    """The dataset's questions and relevant documents as a pairs file (query, passage_id)."""
    queries = {}
    for line in (data / "queries.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        queries[row["_id"]] = row["text"]
    split = next((data / "qrels").glob("*.tsv"))
    count = 0
    with path.open("w", encoding="utf-8") as sink, split.open(encoding="utf-8") as source:
        for row in csv.DictReader(source, delimiter="\t"):
            if int(float(row["score"])) > 0 and row["query-id"] in queries:
                pair = {
                    "id": f"{row['query-id']}-{row['corpus-id']}",  # a query may have two documents
                    "query": queries[row["query-id"]],
                    "passage_id": row["corpus-id"],
                }
                sink.write(json.dumps(pair, ensure_ascii=False) + "\n")
                count += 1
    return count


def in_batch_only(plan, say) -> dict:
    """The base model trained on round 1's training rows with no hard negatives, scored on the split."""
    from dataclasses import replace

    from pipeline.run.folder import RunFolder
    from pipeline.train.evaluate import evaluate
    from pipeline.train.split import QRELS_SPLIT
    from pipeline.train.trainer import train

    out = plan.out / "in-batch-only"
    started = time.perf_counter()
    if not (out / "config.json").exists():
        say("in-batch negatives only: train the base model on round 1's rows")
        train(
            RunFolder(plan.run_folder(1)).train_split_folder,
            plan.base_model,
            out,
            replace(plan.train, negatives=0),
        )
    trained = time.perf_counter() - started
    result = evaluate(str(out), plan.eval_split, split=QRELS_SPLIT, per_query=True)
    result["model"] = str(out)
    result["train_seconds"] = round(trained, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench-loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-per-round", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4, help="docs/training.md: 2e-5 barely moves MiniLM")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100 pairs")
    parser.add_argument(
        "--eval-documents",
        type=int,
        default=3000,
        help="the eval corpus: the pool sampled to this many documents",
    )
    parser.add_argument(
        "--lang", default="en", help="the queries' language: picks the base embedder and the language check"
    )
    parser.add_argument(
        "--gate-cosine",
        action="store_true",
        help="keep the gate's cosine filter on for the human pairs (off by default: it keeps only the "
        "pairs the base model already ranks well, and the eval split then measures nothing)",
    )
    parser.add_argument("--set", action="append", default=[], help="a config key=value for every round")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/loop.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: not found (the shared data folder); nothing to measure")
        return
    if args.quick:
        args.rounds, args.rows_per_round = 2, 100

    from pipeline.cli.loop import pool_passages_of
    from pipeline.config import load_config
    from pipeline.loop import LoopPlan, run_loop
    from pipeline.models import resolve_embedder
    from pipeline.train.compare import compare
    from pipeline.train.config import TrainConfig

    args.out.mkdir(parents=True, exist_ok=True)
    pairs = args.out / "pairs.jsonl"
    count = write_pairs(args.data, pairs)
    sets = [
        f"corpus.path={args.data / 'corpus.jsonl'}",
        f"pairs.path={pairs}",
        f"corpus.language={args.lang}",
        f"generation.languages=[{args.lang}]",
        *([] if args.gate_cosine else ["filters.cosine.enabled=false"]),
        *args.set,
    ]
    config = load_config(None, sets)
    base = resolve_embedder(None, [args.lang]).path
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, save_every=0, seed=0)
    plan = LoopPlan(
        args.out, config, args.rounds, args.rows_per_round, base, train, eval_documents=args.eval_documents
    )
    started = time.perf_counter()
    summary = run_loop(plan, passages_of=pool_passages_of, say=lambda line: print(line, flush=True))
    loop_seconds = time.perf_counter() - started

    # equal rows: round 1's model (mined negatives + margin) against in-batch negatives alone
    baseline = in_batch_only(plan, print)
    round_1 = json.loads((plan.round(1) / "eval.json").read_text())
    versus = compare({"in-batch only": baseline, "mined + margin": round_1})["mined + margin"]

    steps = {}
    for k in range(1, args.rounds + 1):
        steps[f"round {k}"] = {
            name: json.loads((plan.round(k) / f"{name}.json").read_text()).get("seconds")
            for name in ("generate", "split", "train", "eval")
        }
    result = {
        "data": str(args.data.name),
        "pairs": count,
        "rounds": args.rounds,
        "rows_per_round": args.rows_per_round,
        "eval_documents": args.eval_documents,
        "settings": sets[2:],
        "base_model": base,
        "lift": summary["lift"],
        "eval_queries": summary["queries"],
        "mined_vs_in_batch_at_equal_rows": {
            "in_batch_only_ndcg@10": baseline["ndcg@10"],
            "mined_margin_ndcg@10": round_1["ndcg@10"],
            **{m: versus[m] for m in versus},
        },
        "seconds": {
            "loop": round(loop_seconds, 1),
            "steps": steps,
            "in_batch_train": baseline["train_seconds"],
        },
        "machine": "2-core CPU, no GPU",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "lift"}, indent=2))
    for entry in summary["lift"]:
        d = entry.get("difference", {}).get("ndcg@10")
        shown = f" {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d else ""
        print(
            f"{entry['name']:>8}: nDCG@10 {entry['ndcg@10']:.4f}{shown}  Recall@100 {entry['recall@100']:.4f}"
        )


if __name__ == "__main__":
    main()
