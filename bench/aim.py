"""Does aiming a round at the model's failures beat an unaimed round at equal rows? Human pairs, CPU.

SciFact's training claims become a pairs file (claim, abstract id), as in bench/loop.py. Round 1
of `synth loop` runs once: the pairs through the gate, the frozen eval split (20% of the
documents held out), MiniLM trained on the rest, then the failure analysis of its training rows
and the plan for round 2 (`round-1/failures.json`, `round-1/aim.json`). Round 2 then runs per arm
from that same round 1, reading the same number of pairs (2 x --rows-per-round):

- **targeted**: the pairs drawn by the plan (pairs of documents near the failing rows' positives,
  30% of the draw kept in file order);
- **untargeted**: the first pairs of the file, as an unaimed loop reads them.

Both are trained from round 1's model with the same settings, once per training seed, and scored
on the frozen split; the difference (targeted - untargeted) has a paired bootstrap 95% interval
over the held-out claims. A third arm, **targeted+model**, adds the negatives round 1's
model gets wrong (`negatives.model`, source `model`) to the targeted round: against
**targeted** it measures model-mined negatives beside embedder-mined ones at equal pairs.
SciFact's test claims have no relevance labels in the shared data, so the frozen split is the
only test.

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
    parser.add_argument(
        "--arms",
        default="targeted,untargeted,targeted+model",
        help="round-2 variants: targeted, untargeted, targeted+model (the aim, and round 1's model's "
        "mistakes as negatives); finished arms are read back, not run again",
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

    def plan_of(folder: Path, seed: int, arm: str) -> LoopPlan:
        train = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, save_every=0, seed=seed
        )
        plan = LoopPlan(
            folder, config, 2, args.rows_per_round, base, train, eval_documents=args.eval_documents
        )
        plan.aim, plan.aim_share = arm != "untargeted", args.share
        plan.model_negatives = arm == "targeted+model"  # else one thing differs between arms: the aim
        return plan

    shared = plan_of(args.out / "round-1-shared", 0, "targeted")

    def without_model(folder: str, names: list[str]) -> list[str]:
        return ["model"] if Path(folder) == shared.round(1) else []

    started = time.perf_counter()
    first = run_round(shared, 1, None, pool_passages_of, say)
    first_seconds = time.perf_counter() - started
    arms: dict[str, dict] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            plan = plan_of(args.out / f"{arm}-seed{seed}", seed, arm)
            if not plan.round(1).exists():  # round 1's files, and a link to its one model (one pool of it)
                shutil.copytree(shared.round(1), plan.round(1), ignore=without_model)
                (plan.round(1) / "model").symlink_to(shared.model(1).resolve())
            started = time.perf_counter()
            found = run_round(plan, 2, None, pool_passages_of, say)
            arms[f"{arm} seed {seed}"] = {
                "eval": found["eval"],
                "rows": found["generate"]["rows"],
                "rows_in": found["generate"]["rows_in"],
                "drawn": found["generate"].get("aim", {}),
                "seconds": {name: found[name]["seconds"] for name in ("generate", "split", "train", "eval")},
            }

    def versus(first: str, second: str) -> tuple[dict, float | None]:
        """``second`` against ``first`` per seed, and the mean difference in nDCG@10."""
        found = {}
        for seed in args.seeds.split(","):
            a, b = arms.get(f"{first} seed {seed}"), arms.get(f"{second} seed {seed}")
            if a is None or b is None:
                continue
            difference = compare({first: a["eval"], second: b["eval"]})[second]
            found[f"seed {seed}"] = {
                f"{first}_ndcg@10": a["eval"]["ndcg@10"],
                f"{second}_ndcg@10": b["eval"]["ndcg@10"],
                f"{first}_rows": a["rows"],
                f"{second}_rows": b["rows"],
                **difference,
            }
        means = [c["ndcg@10"]["difference"] for c in found.values()]
        return found, round(sum(means) / len(means), 4) if means else None

    comparisons, mean = versus("untargeted", "targeted")
    model_comparisons, model_mean = versus("targeted", "targeted+model")
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
        "mean_difference_ndcg@10": mean,
        "model_negatives_vs_embedder_mined_only": model_comparisons,
        "model_negatives_mean_difference_ndcg@10": model_mean,
        "machine": "2-core CPU, no GPU",
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
