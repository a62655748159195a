"""``synth loop``: from a corpus to a measured, better embedder, round after round.

Each round ``k`` lives in ``DIR/round-k/``:

1. **generate** into ``round-k/run`` (``executors.run_generate``; seed ``seed + k - 1``, and
   ``rows_per_round * k`` passages, so each round writes new queries over a growing corpus share);
2. **split**: round 1 holds out documents (``train/split.py``) and its eval split is frozen: every
   round, the base model and the merge score on it, so rounds compare on one test. Later rounds
   keep round 1's held-out documents out of their training rows and write no eval side;
3. **train** from the previous round's model (the base model for round 1) into ``round-k/model``;
   with ``processes`` above 1 (by default, one per GPU of the machine) the round is trained by
   that many processes under ``torchrun``, as ``synth train`` is on several GPUs;
4. **eval** of the round's model on the frozen split, with per-query scores;
5. before every round but the last, with ``aim`` on (the default): **failures**, the rank of each
   train-side row's positive under the round's model, with failure rates by corpus neighbourhood,
   task type, language pair, question type and difficulty (``train/failures.py``,
   ``round-k/failures.json``), then **aim**, the plan that points the next round at them
   (``aim/plan.py``, ``round-k/aim.json``): its weights replace the next round's distributions and
   its passages are drawn toward the failing neighbourhoods, ``aim_share`` of the draw kept as
   configured. With ``model_negatives`` on (the default), rounds after the first also mine the
   previous round's model's own mistakes as negatives (``negatives.model``).

After the rounds: the base model, and a slerp merge of the rounds' models (the paper's third
stage, ``train/merge.py``; from two rounds on), are scored on the same split; then
``DIR/report.html`` and ``DIR/loop.json`` (the lift per round with paired bootstrap intervals,
tokens and engine hours per round and per point of nDCG@10, and the held-out queries the final
model still misses).

Every step writes its result in ``round-k/<step>.json`` when it is done; a rerun of the same
command skips finished steps and resumes the one it was in (generation and training resume
themselves).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import storage
from .config import RunConfig
from .engine import ChatEngine
from .faults import crash_point

log = logging.getLogger(__name__)

STEPS = ("generate", "split", "train", "eval", "failures", "aim")


@dataclass
class LoopPlan:
    """What one loop does: its folder, rounds, rows per round, base model and settings."""

    out: Path
    config: RunConfig  # the generate options of every round (out_dir, limit and seed set per round)
    rounds: int
    rows_per_round: int
    base_model: str
    train: object  # train.config.TrainConfig
    fraction: float = 0.2
    max_queries: int = 2000
    eval_documents: int = 100_000  # the eval corpus: the pool, sampled down to this many documents
    processes: int = 1  # training processes per round (torchrun above 1: one per GPU)
    aim: bool = True  # rounds after the first aimed at the previous round's failures
    aim_share: float = 0.3  # share of an aimed round's draw kept as configured
    model_negatives: bool = True  # rounds after the first mine the previous round's model's mistakes
    extra: dict = field(default_factory=dict)  # run_generate's keyword arguments (workers, executor...)

    def round(self, k: int) -> Path:
        return self.out / f"round-{k}"

    def run_folder(self, k: int) -> Path:
        return self.round(k) / "run"

    def model(self, k: int) -> Path:
        return self.round(k) / "model"

    @property
    def eval_split(self) -> Path:
        from .run.folder import RunFolder

        return RunFolder(self.run_folder(1)).eval_split_folder


def done(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def step(plan: LoopPlan, k: int, name: str, work: Callable[[], dict]) -> dict:
    """Run ``work`` unless the step's result file exists; keep its result when it ends."""
    marker = plan.round(k) / f"{name}.json"
    found = done(marker)
    if found is not None:
        log.info("round %d: %s already done", k, name)
        return found
    started = time.perf_counter()
    result = {**work(), "seconds": round(time.perf_counter() - started, 1)}  # time of this attempt
    crash_point(f"loop_{name}")
    storage.write_json(marker, result)
    return result


def run_loop(
    plan: LoopPlan,
    engine: ChatEngine | None = None,
    passages_of: Callable[[Path], object] | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Every round, then the base and the merge on the frozen split, then the report."""
    from .train.compare import compare

    plan.out.mkdir(parents=True, exist_ok=True)
    rounds = []
    for k in range(1, plan.rounds + 1):
        rounds.append(run_round(plan, k, engine, passages_of, say))
    results = {"base": _score(plan, plan.out / "base.json", plan.base_model, say, "base model")}
    for k, found in enumerate(rounds, 1):
        results[f"round {k}"] = found["eval"]
    if plan.rounds >= 2:
        merged = plan.out / "merged"
        results["merge"] = _score(plan, plan.out / "merge.json", str(merged), say, "merge", merge_into=merged)
    differences = compare(results)
    summary = _summary(plan, rounds, results, differences)
    storage.write_json(plan.out / "loop.json", summary)
    from .handover.loop_report import write_loop_report

    write_loop_report(plan.out, summary)
    return summary


def run_round(plan: LoopPlan, k: int, engine, passages_of, say) -> dict:
    """Generate, split, train and score round ``k``; each step once."""
    from .train.split import split_run

    run = plan.run_folder(k)
    generated = step(plan, k, "generate", lambda: _generate(plan, k, engine, say))
    frozen = None if k == 1 else plan.run_folder(1)

    def split() -> dict:
        say(f"round {k}: split")
        config = plan.config
        passages = passages_of(run) if passages_of is not None and k == 1 else None
        dedup = config.filters.dedup
        return split_run(
            run,
            plan.fraction,
            config.seed,
            plan.max_queries,
            passages,
            dedup.near_threshold,
            dedup.num_perm,
            frozen,
            plan.eval_documents,
        )

    splitted = step(plan, k, "split", split)
    trained = step(plan, k, "train", lambda: _train(plan, k, say))
    scored = step(plan, k, "eval", lambda: _score(plan, None, str(plan.model(k)), say, f"round {k}"))
    found = {"generate": generated, "split": splitted, "train": trained, "eval": scored}
    if plan.aim and k < plan.rounds:
        found["failures"] = step(plan, k, "failures", lambda: _failures(plan, k, passages_of, say))
        found["aim"] = step(plan, k, "aim", lambda: _aim(plan, k, found["failures"], say))
    return found


def _failures(plan: LoopPlan, k: int, passages_of, say) -> dict:
    """With ``--pairs``, the pairs no round has read yet are the probe (rows the model never saw);
    else the round's own training rows. The pairs file is read once here."""
    from .train.failures import analyse_failures

    pairs = _all_pairs(plan.config)
    probe = _probe_pairs(plan, k, passages_of, pairs) if pairs is not None else None
    what = f"{len(probe)} unread pairs" if probe is not None else "the train side"
    say(f"round {k}: failure analysis of {what} under {plan.model(k)}")
    found = analyse_failures(
        plan.run_folder(k),
        str(plan.model(k)),
        plan.eval_split,
        seed=plan.config.seed,
        documents={p.source_id for p in pairs} if pairs is not None else None,
        probe=probe,
    )
    return {**found, "pairs": len(pairs)} if pairs is not None else found


def _all_pairs(config: RunConfig) -> list | None:
    """With ``--pairs``: every pair, in file order, as the run reads them (None without pairs)."""
    if not config.reads_pairs:
        return None
    from .readers.documents import ReadStats
    from .readers.passages import open_input, task_passages

    whole = config.model_copy(deep=True)
    whole.limit, whole.output.num_tasks, whole.aim.path = None, 1, None
    return list(task_passages(whole, open_input(whole), 0, len, ReadStats()))


def _probe_pairs(plan: LoopPlan, k: int, passages_of, pairs: list) -> list[dict]:
    """The pairs after the first ``rows_per_round * k`` (those no round has read), held-out
    documents left out, each with its document's first pool passage as the positive."""
    from . import schema as S
    from .instructions import instruction
    from .train.failures import MAX_ROWS
    from .train.split import held_out_documents

    held_out = held_out_documents(plan.run_folder(1))
    unread = [p for p in pairs[plan.rows_per_round * k :] if p.source_id not in held_out][: 2 * MAX_ROWS]
    wanted = {p.source_id for p in unread}
    texts: dict[str, str] = {}
    for passage in (passages_of(plan.run_folder(k)) or (lambda: ()))():
        if passage.source_id in wanted and passage.source_id not in texts:
            texts[passage.source_id] = passage.text
    language = next(iter(plan.config.generation.languages))
    probe = []
    for p in unread:
        if p.source_id in texts:
            row = {S.TASK_TYPE: "retrieval", S.LANGUAGE: p.language or language}
            row[S.PASSAGE_LANGUAGE] = row[S.LANGUAGE]
            row |= {S.ID: p.passage_id, S.QUERY: p.meta["query"], S.POSITIVE: texts[p.source_id]}
            row |= {S.SOURCE_ID: p.source_id, S.PASSAGE_ID: f"{p.source_id}#probe"}
            row[S.INSTRUCTION] = instruction(row)
            probe.append(row)
    return probe


def _aim(plan: LoopPlan, k: int, failures: dict, say) -> dict:
    from .aim.plan import aim_plan
    from .run.folder import RunFolder
    from .train.split import held_out_documents

    first = RunFolder(plan.run_folder(1))
    corpus = json.loads(first.split_file.read_text(encoding="utf-8"))["corpus"]
    pool = corpus.get("sampled_from") or corpus["documents"]
    if plan.config.reads_pairs:  # the draw is of pairs, not of pool passages
        pool = failures.get("pairs") or len(_all_pairs(plan.config))
    aimed = aim_plan(
        failures,
        plan.config,
        share_kept=plan.aim_share,
        pool_passages=pool,
        held_out=held_out_documents(first.root),
        source=f"round-{k}/failures.json",  # beside this file, in the loop folder
    )
    say(f"round {k + 1} aims at: " + ("; ".join(aimed["why"]) or "no slice fails more than the rest"))
    return aimed


def _generate(plan: LoopPlan, k: int, engine, say) -> dict:
    from .executors import run_generate

    say(f"round {k}: generate into {plan.run_folder(k)}")
    config = plan.config.model_copy(deep=True)
    config.output.out_dir = str(plan.run_folder(k))
    config.limit = plan.rows_per_round * k
    config.seed = plan.config.seed + k - 1
    if plan.aim and k > 1:
        from .aim.plan import apply_aim

        config = apply_aim(config, plan.round(k - 1) / "aim.json")
    if plan.model_negatives and k > 1:
        config.negatives.model = str(plan.model(k - 1))
    result = run_generate(config, engine=engine, **plan.extra)
    stats = result.stats.to_json()
    tokens = stats.get("tokens", {})
    return {
        "rows": stats["rows_out"],
        "rows_in": stats["rows_in"],
        "total_tokens": tokens.get("total_tokens", 0),
        "output_tokens": tokens.get("output_tokens", 0),
        "engine_hours": round(tokens.get("engine_seconds", 0.0) / 3600, 6),
        **({"aim": stats["input"]["aim"]} if stats.get("input", {}).get("aim") else {}),
    }


def _train(plan: LoopPlan, k: int, say) -> dict:
    from .run.folder import RunFolder
    from .train.trainer import train

    start = plan.base_model if k == 1 else str(plan.model(k - 1))
    say(f"round {k}: train {start} -> {plan.model(k)}")
    data = RunFolder(plan.run_folder(k)).train_split_folder
    if plan.processes > 1:
        losses = _train_processes(data, start, plan.model(k), plan.train, plan.processes)
    else:
        losses = train(data, start, plan.model(k), plan.train, resume=True)
    if not losses:
        raise ValueError(f"round {k}: no trainable rows in {data} (the gate kept too few rows)")
    return {"from": start, "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1]}


def _train_processes(data: Path, start: str, out: Path, config, processes: int) -> list[float]:
    """``synth train`` under ``torchrun`` with ``processes`` processes (one per GPU; gloo on CPUs)."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    command += ["-m", "pipeline.cli", "train", "--data", str(data), "--model", start, "--out", str(out)]
    flags = {
        "epochs": config.epochs,
        "batch-size": config.batch_size,
        "lr": config.lr,
        "negatives": config.negatives,
        "temperature": config.temperature,
        "max-length": config.max_length,
        "mini-batch": config.mini_batch,
        "accumulate": config.accumulate,
        "save-every": config.save_every,
        "seed": config.seed,
    }
    command += [item for name, value in flags.items() for item in (f"--{name}", str(value))]
    if config.matryoshka_dims:
        command += ["--matryoshka", ",".join(map(str, config.matryoshka_dims))]
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"training with {processes} processes failed: {tail} (log: {out / 'logs'})")
    return json.loads((out / "training_log.json").read_text(encoding="utf-8"))["losses"]


def _score(
    plan: LoopPlan, marker: Path | None, model: str, say, label: str, merge_into: Path | None = None
) -> dict:
    """``evaluate`` on the frozen split, per-query scores kept (once, when ``marker`` keeps it)."""
    from .train.evaluate import evaluate
    from .train.split import QRELS_SPLIT

    found = done(marker) if marker is not None else None
    if found is not None:
        return found
    if merge_into is not None:
        from .train.merge import merge_checkpoints

        merge_checkpoints([plan.model(k) for k in range(1, plan.rounds + 1)], merge_into)
    say(f"scoring {label} on {plan.eval_split}")
    result = evaluate(model, plan.eval_split, split=QRELS_SPLIT, per_query=True)
    result["model"] = model
    if marker is not None:
        storage.write_json(marker, result)
    return result


def _summary(plan: LoopPlan, rounds: list[dict], results: dict, differences: dict) -> dict:
    base = results["base"]
    table = []
    for name, result in results.items():
        entry = {
            "name": name,
            "model": result["model"],
            "ndcg@10": result["ndcg@10"],
            "recall@100": result["recall@100"],
        }
        if name in differences:
            entry["difference"] = differences[name]
        if name.startswith("round "):
            generated = rounds[int(name.split()[1]) - 1]["generate"]
            gain = (result["ndcg@10"] - base["ndcg@10"]) * 100
            entry.update({k: generated[k] for k in ("rows", "total_tokens", "engine_hours")})
            entry["engine_hours_per_ndcg_point"] = (
                round(generated["engine_hours"] / gain, 6) if gain > 0 else None
            )
            entry["tokens_per_ndcg_point"] = round(generated["total_tokens"] / gain) if gain > 0 else None
        table.append(entry)
    final = results[f"round {plan.rounds}"]
    misses = sorted(q for q, s in final["per_query"].items() if s["ndcg@10"] == 0.0)
    return {
        "rounds": plan.rounds,
        "rows_per_round": plan.rows_per_round,
        "eval_split": str(plan.eval_split),
        "queries": base["queries"],
        "documents": base["documents"],
        "lift": table,
        "missed_by_final_model": _misses(plan.eval_split, misses),
        "aims": _aims(plan, rounds),
    }


def _aims(plan: LoopPlan, rounds: list[dict]) -> list[dict]:
    """What each aimed round aimed at (the previous round's failures) and what it changed."""
    aims = []
    for k, found in enumerate(rounds, 1):
        if "aim" not in found:
            continue
        aimed, failures = found["aim"], found["failures"]
        configured = {f: getattr(plan.config.generation, f) for f in aimed["generation"]}
        changed = {
            field: {name: [round(configured[field].get(name, 0.0), 4), w] for name, w in weights.items()}
            for field, weights in aimed["generation"].items()
        }
        drawn = rounds[k]["generate"].get("aim", {}) if k < len(rounds) else {}
        aims.append(
            {
                "round": k + 1,
                "from_round": k,
                "rows_analysed": failures["rows"],
                "failed": failures["failed"],
                "failure_rate": failures["rate"],
                "why": aimed["why"],
                "target_documents": len(aimed["passages"]["targets"]),
                "weights": changed,
                "passages_drawn": drawn,
            }
        )
    return aims


def _misses(eval_split: Path, query_ids: list[str], most: int = 50) -> list[dict]:
    """The held-out queries the final model ranks its positive outside the top 10 for (first ``most``)."""
    from .train.beir import load_beir
    from .train.split import QRELS_SPLIT

    corpus, queries, qrels = load_beir(eval_split, QRELS_SPLIT)
    shown = []
    for q in query_ids[:most]:
        positive = next(iter(qrels.get(q, {})), None)
        shown.append({"query_id": q, "query": queries.get(q, ""), "positive": corpus.get(positive, "")[:400]})
    return shown
