"""Training throughput of ``synth train`` before and after the move to SentenceTransformerTrainer.

"Before" is the hand-written single-device loop of commit 9837822 (read with ``git archive`` into a
temporary folder), "after" is the working tree. Both train all-MiniLM-L6-v2 with the paper's
improved InfoNCE (temperature 0.05, one hard negative, batch 32, max length 256, one epoch) on the
same rows: SciFact claims with their relevant abstract as the positive and a seeded other abstract
as the negative. Each side runs in a fresh process, alternating, and times only its ``train`` call;
the figure is samples (rows) per second and the ratio after / before of the medians.

    .venv/bin/python bench/train_throughput.py --json bench/results/train_throughput.json  # 512 rows, 2 runs
    .venv/bin/python bench/train_throughput.py --quick      # 256 rows, one run each

On a GPU machine the "after" side trains on the GPU (the device is printed) and the "before"
side cannot, which is the point of the move. Run it alone: on 2 shared cores any other busy
process distorts the timings.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = "9837822"  # the last commit with the hand-written loop
SCIFACT = ROOT.parent / "shared/data/corpora/scifact_en"
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from pipeline.train.trainer import TrainConfig, train
config = TrainConfig(batch_size={batch}, epochs=1, max_length=256, negatives=1)
if hasattr(config, "save_every"):
    config.save_every = 0  # no checkpoints: the old loop wrote none
started = time.perf_counter()
losses = train(Path({data!r}), {model!r}, Path({out!r}), config)
seconds = time.perf_counter() - started
log = json.loads((Path({out!r}) / "training_log.json").read_text())
print(json.dumps({{"seconds": seconds, "steps": len(losses), "device": log.get("device", "cpu")}}))
"""


def write_rows(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` SciFact rows in the pipeline's schema: claim, relevant abstract, another abstract."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.train_scifact import human_row
    from pipeline import schema as S
    from pipeline.train.beir import load_beir

    corpus, queries, qrels = load_beir(SCIFACT, "train", with_title=True)
    doc_ids = sorted(corpus)
    rng = random.Random(seed)
    rows = []
    for qid in sorted(qrels):
        for doc in sorted(qrels[qid]):
            if doc in corpus and len(rows) < count:
                other = rng.choice([d for d in rng.sample(doc_ids, 4) if d != doc])
                row = human_row(qid, doc, queries[qid], corpus[doc])
                rows.append(row | {S.NEGATIVES: [corpus[other]]})
    pairs = len(rows)
    while len(rows) < count:  # beyond SciFact's train pairs: repeat them under new ids
        rows.append(rows[len(rows) % pairs] | {S.ID: f"copy-{len(rows)}"})
    data = folder / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=S.ROW_SCHEMA), data / "part-00000-00000.parquet")
    return data


def old_tree(folder: Path) -> Path:
    """The pipeline package as it was at BEFORE, unpacked under ``folder``."""
    command = ["git", "-C", str(ROOT), "archive", BEFORE, "pipeline"]
    archive = subprocess.run(command, capture_output=True, check=True).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_once(tree: Path, data: Path, model: str, out: Path, batch: int) -> dict:
    code = CHILD.format(root=str(tree), data=str(data), model=model, out=str(out), batch=batch)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise RuntimeError(f"training in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="256 rows, one run each")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 256, 1
    if not SCIFACT.exists():
        print(f"skipped: {SCIFACT} is not on this machine")
        return

    from pipeline.models import resolve_embedder

    model = resolve_embedder(None).path
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_rows(tmp, args.rows)
        trees = {"after": ROOT}
        try:
            trees = {"before": old_tree(tmp / "before"), "after": ROOT}
        except subprocess.CalledProcessError:  # a shallow clone: the after side alone (on a GPU, its figure)
            print(f"commit {BEFORE} is not in this clone: measuring the current trainer only")
        runs: dict[str, list[dict]] = {side: [] for side in trees}
        for k in range(args.repeats):
            for side, tree in trees.items():
                run = run_once(tree, data, model, tmp / f"{side}-{k}", args.batch)
                run["samples_per_second"] = args.rows / run["seconds"]
                runs[side].append(run)
                print(f"{side:6s} run {k}: {run['samples_per_second']:.1f} samples/s on {run['device']}")
    rate = {side: statistics.median(r["samples_per_second"] for r in rs) for side, rs in runs.items()}
    result = {
        "rows": args.rows,
        "batch_size": args.batch,
        "model": "all-MiniLM-L6-v2",
        "before_commit": BEFORE,
        "runs": runs,
        "samples_per_second": {side: round(value, 2) for side, value in rate.items()},
        "after_over_before": round(rate["after"] / rate["before"], 3) if "before" in rate else None,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
