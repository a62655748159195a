"""Does aiming a round at the model's failures beat an unaimed round at equal rows? Human pairs, CPU.

SciFact's training claims become a pairs file (claim, abstract id), as in bench/loop.py. Round 1
of `synth loop` runs once: the pairs through the gate, the frozen eval split (20% of the
documents held out), MiniLM trained on the rest, then the failure analysis of its training rows
and the plan for round 2 (`round-1/failures.json`, `round-1/aim.json`). Round 2 then runs twice
from that same round 1, reading the same number of pairs (2 x --rows-per-round):

- **targeted**: the pairs drawn by the plan (pairs of documents near the failing rows' positives,
  30% of the draw kept in file order);
- **untargeted**: the first pairs of the file, as an unaimed loop reads them.

Both are trained from round 1's model with the same settings, once per training seed, and scored
on the frozen split; the difference (targeted - untargeted) has a paired bootstrap 95% interval
over the held-out claims. SciFact's test claims have no relevance labels in the shared data, so
the frozen split is the only test.

    .venv/bin/python bench/aim.py                                   # 200 pairs a round, seeds 0 and 1
    .venv/bin/python bench/aim.py --quick --out outputs/bench-aim-q # 100 pairs, seed 0

Figures: docs/training.md, "Aimed rounds"; JSON in bench/results/aim.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared/data/corpora/scifact_en"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench-aim")
    parser.add_argument("--rows-per-round", type=int, default=200)
    parser.add_argument("--seeds", default="0,1", help="training seeds of round 2, comma-separated")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-documents", type=int, default=3000)
    parser.add_argument(
        "--share", type=float, default=0.3, help="the share of round 2's draw kept as configured"
    )
    parser.add_argument("--quick", action="store_true", help="100 pairs a round, one seed")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/aim.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: not found (the shared data folder); nothing to measure")
        return
    if args.quick:
        args.rows_per_round, args.seeds = 100, "0"
    sys.path.insert(0, str(ROOT / "bench"))
    from loop import write_pairs

    from pipeline.cli.loop import pool_passages_of
    from pipeline.config import load_config
    from pipeline.loop import LoopPlan, run_round
    from pipeline.models import resolve_embedder
    from pipeline.train.compare import compare
    from pipeline.train.config import TrainConfig

    say = lambda line: print(line, flush=True)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = args.out / "pairs.jsonl"
    count = write_pairs(args.data, pairs)
    sets = [
        f"corpus.path={args.data / 'corpus.jsonl'}",
        f"pairs.path={pairs}",
        "corpus.language=en",
        "generation.languages=[en]",
        "filters.cosine.enabled=false",  # bench/loop.py: the cut keeps only pairs the base model ranks well
    ]
    config = load_config(None, sets)
    base = resolve_embedder(None, ["en"]).path

    def plan_of(folder: Path, seed: int, aim: bool) -> LoopPlan:
        train = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, save_every=0, seed=seed
        )
        plan = LoopPlan(
            folder, config, 2, args.rows_per_round, base, train, eval_documents=args.eval_documents
        )
        plan.aim, plan.aim_share = aim, args.share
        plan.model_negatives = False  # the aim alone differs between the arms (bench/negatives.py: the other)
        return plan

    shared = plan_of(args.out / "round-1-shared", 0, True)
    started = time.perf_counter()
    first = run_round(shared, 1, None, pool_passages_of, say)
    first_seconds = time.perf_counter() - started
    arms: dict[str, dict] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm, aim in (("targeted", True), ("untargeted", False)):
            plan = plan_of(args.out / f"{arm}-seed{seed}", seed, aim)
            if not plan.round(1).exists():
                shutil.copytree(shared.round(1), plan.round(1))
            started = time.perf_counter()
            found = run_round(plan, 2, None, pool_passages_of, say)
            arms[f"{arm} seed {seed}"] = {
                "eval": found["eval"],
                "rows": found["generate"]["rows"],
                "rows_in": found["generate"]["rows_in"],
                "drawn": found["generate"].get("aim", {}),
                "seconds": round(time.perf_counter() - started, 1),
            }
    comparisons = {}
    for seed in args.seeds.split(","):
        targeted, untargeted = arms[f"targeted seed {seed}"], arms[f"untargeted seed {seed}"]
        versus = compare({"untargeted": untargeted["eval"], "targeted": targeted["eval"]})["targeted"]
        comparisons[f"seed {seed}"] = {
            "targeted_ndcg@10": targeted["eval"]["ndcg@10"],
            "untargeted_ndcg@10": untargeted["eval"]["ndcg@10"],
            "targeted_rows": targeted["rows"],
            "untargeted_rows": untargeted["rows"],
            **versus,
        }
    differences = [c["ndcg@10"]["difference"] for c in comparisons.values()]
    result = {
        "data": args.data.name,
        "pairs": count,
        "rows_per_round": args.rows_per_round,
        "eval_documents": args.eval_documents,
        "share_kept": args.share,
        "round_1": {
            "ndcg@10": first["eval"]["ndcg@10"],
            "eval_queries": first["eval"]["queries"],
            "failures": {k: first["failures"][k] for k in ("rows", "failed", "rate", "median_rank")},
            "why": first["aim"]["why"],
            "target_documents": len(first["aim"]["passages"]["targets"]),
            "seconds": round(first_seconds, 1),
        },
        "round_2": {name: {k: v for k, v in arm.items() if k != "eval"} for name, arm in arms.items()},
        "targeted_vs_untargeted": comparisons,
        "mean_difference_ndcg@10": round(sum(differences) / len(differences), 4),
        "machine": "2-core CPU, no GPU",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
