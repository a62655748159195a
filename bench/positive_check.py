"""The corpus check of positives against human relevance labels (filters/positive_check.py).

Each labelled (query, relevant document) pair of a BEIR folder in ../shared/data becomes a row
whose positive is that document; the pool is the whole corpus under the run's embedder (MiniLM
for English). The check then says, per row, whether other corpus passages outrank the positive,
and which one it prefers. Measured:

- the share of rows it flags (their positive outranked), and the share it calls easy;
- the precision of its preference: how often the passage it would put first is itself labelled
  relevant to the query (a true second answer) rather than a look-alike;
- with ``--judge MODEL`` (an in-process vLLM model), the judge's verdicts on the flagged rows:
  the share relabelled, confirmed and dropped, and how often a relabelled positive is labelled
  relevant. Without it, the packaged demo's behaviour: flags only.

    .venv/bin/python bench/positive_check.py                       # SciFact and PubMedQA, flags only
    .venv/bin/python bench/positive_check.py --quick               # 200 rows of SciFact

Figures: docs/quality.md, "Positives checked against the corpus"; JSON in
bench/results/positive_check.json.
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
DATA = ROOT.parent / "shared/data/corpora"


def labelled(folder: Path, most: int) -> tuple[dict, list[tuple[str, str, set[str]]]]:
    """The corpus (id -> text) and up to ``most`` (query id, query, relevant ids) of a BEIR folder."""
    corpus = {}
    for line in (folder / "corpus.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        corpus[row["_id"]] = " ".join(p for p in (row.get("title"), row.get("text")) if p)
    queries = {}
    for line in (folder / "queries.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        queries[row["_id"]] = row["text"]
    relevant: dict[str, set[str]] = {}
    for path in sorted((folder / "qrels").glob("*.tsv")):
        with path.open(encoding="utf-8") as source:
            for row in csv.DictReader(source, delimiter="\t"):
                if int(float(row["score"])) > 0 and row["corpus-id"] in corpus and row["query-id"] in queries:
                    relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
    pairs = [(q, queries[q], docs) for q, docs in sorted(relevant.items())][:most]
    return corpus, pairs


def measure(name: str, folder: Path, most: int, judge_model: str | None) -> dict:
    from pipeline import schema as S
    from pipeline.config import JudgeConfig, PositiveCheckConfig
    from pipeline.embed.embedder import Embedder
    from pipeline.embed.pool import PassagePool
    from pipeline.filters.positive_check import PositiveCheck
    from pipeline.generate.prompts import PromptLibrary
    from pipeline.models import cache_root, resolve_embedder
    from pipeline.readers.documents import Passage

    corpus, pairs = labelled(folder, most)
    resolved = resolve_embedder(None, ["en"])
    embedder = Embedder(resolved.path, resolved.name, store_root=cache_root() / "vectors")
    passages = [Passage(f"{d}#0", d, None, text, "en") for d, text in corpus.items()]
    pool = PassagePool.build(lambda: passages, embedder, cache_root() / "pools")
    rows = []
    for qid, query, docs in pairs:
        doc = sorted(docs)[0]
        rows.append(
            {
                S.ID: qid,
                S.QUERY: query,
                S.POSITIVE: corpus[doc],
                S.PASSAGE_ID: f"{doc}#0",
                S.SOURCE_ID: doc,
                S.TASK_TYPE: "retrieval",
                S.LANGUAGE: "en",
                S.PASSAGE_LANGUAGE: "en",
            }
        )
    relevant = {qid: docs for qid, _, docs in pairs}
    config = PositiveCheckConfig()
    started = time.perf_counter()
    check = PositiveCheck(embedder, pool, config)
    outranked = check._compare(rows)  # the comparison alone: what the demo does (flags)
    seconds = time.perf_counter() - started
    preferred_relevant = sum(1 for i, better in outranked.items() if better[0][3] in relevant[rows[i][S.ID]])
    result = {
        "dataset": name,
        "rows": len(rows),
        "corpus": len(corpus),
        "flagged": len(outranked),
        "flagged_share": round(len(outranked) / len(rows), 4),
        "easy_share": round(sum(1 for r in rows if r[S.EASY]) / len(rows), 4),
        "preferred_is_labelled_relevant": preferred_relevant,
        "precision_of_preference": round(preferred_relevant / len(outranked), 4) if outranked else None,
        "queries_with_several_relevant": sum(1 for docs in relevant.values() if len(docs) > 1),
        "seconds": round(seconds, 1),
    }
    if judge_model:
        from pipeline.config import ModelConfig
        from pipeline.engine.factory import get_engine
        from pipeline.models import resolve_generator

        engine = get_engine(resolve_generator(judge_model), ModelConfig(), 0)
        judged = PositiveCheck(embedder, pool, config, engine, PromptLibrary(), JudgeConfig())
        fresh = [{k: v for k, v in r.items() if k not in (S.POSITIVE_GAP, S.EASY)} for r in rows]
        done = judged(fresh)
        replaced = [r for r in done.kept if r[S.PASSAGE_ID] != f"{sorted(relevant[r[S.ID]])[0]}#0"]
        result["judge"] = {
            "model": judge_model,
            "confirmed": done.events["positive_confirmed"],
            "replaced": done.events["positive_replaced"],
            "dropped": len(done.dropped),
            "replaced_by_a_labelled_relevant": sum(
                1 for r in replaced if r[S.SOURCE_ID] in relevant[r[S.ID]]
            ),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="scifact_en,pubmedqa_en")
    parser.add_argument("--rows", type=int, default=1000, help="labelled pairs per dataset")
    parser.add_argument("--judge", default=None, help="an LLM for the judged variant (in-process vLLM)")
    parser.add_argument("--quick", action="store_true", help="200 rows of SciFact")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/positive_check.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA}: not found (the shared data folder); nothing to measure")
        return
    if args.quick:
        args.datasets, args.rows = "scifact_en", 200
    results = [measure(name, DATA / name, args.rows, args.judge) for name in args.datasets.split(",")]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps({"results": results, "machine": "2-core CPU, no GPU"}, indent=2) + "\n"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
