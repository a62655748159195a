"""Model side: losses, caching, merging, pooling, and a few real training steps on a tiny Qwen3."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.train.losses import ImprovedInfoNCE, pointwise_reranker_loss
from pipeline.train.losses.reranker import relevance_scores, reranker_prompt
from pipeline.train.merge import slerp, slerp_state_dicts


def batch(n=6, k=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, k, d, generator=g)


def mnrl(directions):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(model=None, scale=20.0, directions=directions)


def test_plain_infonce_equals_multiple_negatives_ranking_loss():
    q, p, n = batch()
    ours = ImprovedInfoNCE(temperature=0.05, query_query=False, doc_doc=False, mask_false_negatives=False)
    theirs = mnrl(("query_to_doc",)).compute_loss_from_embeddings([q, p, n[:, 0], n[:, 1]], None)
    assert torch.allclose(ours(q, p, n), theirs, atol=1e-5)
    # and without hard negatives: the in-batch-only form
    ours_pairs = ours(q, p, n[:, :0])
    theirs_pairs = mnrl(("query_to_doc",)).compute_loss_from_embeddings([q, p], None)
    assert torch.allclose(ours_pairs, theirs_pairs, atol=1e-5)


def test_all_five_terms_match_mnrl_with_query_and_doc_directions():
    q, p, n = batch(seed=1)
    ours = ImprovedInfoNCE(temperature=0.05, mask_false_negatives=False)
    theirs = mnrl(("query_to_doc", "query_to_query", "doc_to_doc")).compute_loss_from_embeddings(
        [q, p, n[:, 0], n[:, 1]], None
    )
    assert torch.allclose(ours(q, p, n), theirs, atol=1e-5)
    assert ours(q, p, n) > ImprovedInfoNCE(query_query=False, doc_doc=False, mask_false_negatives=False)(
        q, p, n
    )


def test_mask_drops_exactly_the_planted_false_negative():
    g = torch.Generator().manual_seed(2)
    d = 64
    q = F.normalize(torch.randn(4, d, generator=g), dim=-1)
    p = F.normalize(q + F.normalize(torch.randn(4, d, generator=g), dim=-1), dim=-1)  # cos(q, p) ~ 0.7
    n = F.normalize(torch.randn(4, 1, d, generator=g), dim=-1)  # unrelated: cos ~ 0 +- 0.13
    n[0, 0] = q[0]  # planted: scores 1.0, above the positive + 0.1
    n[2, 0] = p[2]  # planted: the same text as row 2's positive
    positive_ids = torch.arange(4)
    negative_ids = torch.tensor([[10], [11], [2], [13]])

    plain = ImprovedInfoNCE(query_query=False, doc_doc=False, mask_false_negatives=False)
    masked = ImprovedInfoNCE(query_query=False, doc_doc=False, mask_false_negatives=True)
    value = masked(q, p, n, positive_ids, negative_ids)

    # reference: the plain loss with exactly those two candidates removed by hand
    docs = torch.cat([p, n.reshape(4, d)])
    logits = q @ docs.T / 0.05
    s_pos = logits.diagonal().clone()
    for i in range(4):
        for j in range(8):
            if j != i and logits[i, j] > s_pos[i] + 0.1 / 0.05:
                logits[i, j] = float("-inf")
    logits[:, 4 + 2] = torch.where(
        torch.arange(4) == 2, float("-inf"), logits[:, 4 + 2]
    )  # same text as row 2's
    logits[2, 4 + 2] = float("-inf")
    assert torch.isinf(logits).sum() == 2  # the planted near-copy of q0 and the copy of row 2's positive
    assert torch.isinf(logits[0, 4]) and torch.isinf(logits[2, 6])
    expected = F.cross_entropy(logits, torch.arange(4))
    assert torch.isfinite(value)
    assert value < plain(q, p, n)
    assert torch.allclose(value, expected, atol=1e-5)


def test_reranker_prompt_scores_and_loss():
    prompt = reranker_prompt("what is slerp", "Slerp interpolates on a sphere.")
    assert "<Instruct>:" in prompt and "<Query>: what is slerp" in prompt and "<Document>:" in prompt
    assert prompt.endswith("<think>\n\n</think>\n\n")
    logits = torch.zeros(2, 5)
    logits[0, 3], logits[1, 4] = 4.0, 4.0  # row 0 says yes (id 3), row 1 says no (id 4)
    scores = relevance_scores(logits, yes_id=3, no_id=4)
    assert scores[0] > 0.95 and scores[1] < 0.05
    good = pointwise_reranker_loss(logits, 3, 4, torch.tensor([1, 0]))
    bad = pointwise_reranker_loss(logits, 3, 4, torch.tensor([0, 1]))
    assert good < 0.05 < bad
    assert torch.allclose(good, -torch.log(torch.stack([scores[0], 1 - scores[1]])).mean())


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert torch.isclose(mid.norm(), (a.norm() + b.norm()) / 2, atol=1e-5)
    merged = slerp_state_dicts([{"w": a, "step": torch.tensor(3)}, {"w": b, "step": torch.tensor(9)}])
    assert torch.allclose(merged["w"], mid) and merged["step"].item() == 3


@pytest.mark.engine
def test_last_token_pooling_under_left_padding(tiny_qwen3):
    from pipeline.train.encoder import Encoder

    encoder = Encoder(str(tiny_qwen3))
    assert encoder.pooling == "last" and encoder.tokenizer.padding_side == "left"
    texts = ["short", "a much longer text that forces padding on the short one"]
    together = encoder.encode(texts)
    alone = encoder.encode(texts[:1])
    assert torch.allclose(together[0], alone[0], atol=1e-4)
    assert not torch.allclose(together[0], together[1])
    batch_inputs = encoder.tokenize(texts)
    assert batch_inputs["attention_mask"][0, 0] == 0 and batch_inputs["attention_mask"][0, -1] == 1
    assert batch_inputs["input_ids"][0, -1] == encoder.tokenizer.convert_tokens_to_ids(
        encoder.tokenizer.eos_token
    )
    assert encoder.encode(texts, dim=16).shape == (2, 16)


@pytest.mark.engine
def test_a_few_training_steps_on_tiny_qwen3(tiny_qwen3):
    from pipeline.train.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder(str(tiny_qwen3))
    queries = ["how do tides work", "boiling point of water", "who painted the mona lisa", "speed of light"]
    docs = [
        "The moon's gravity raises the tides.",
        "Water boils at 100 degrees at sea level.",
        "Leonardo da Vinci painted the Mona Lisa.",
        "Light travels at about 300,000 km per second.",
    ]
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=3e-3)
    loss_fn = ImprovedInfoNCE()
    losses = []
    for _ in range(6):
        q = encoder(encoder.tokenize([f"Instruct: retrieve\nQuery:{t}" for t in queries]))
        p = encoder(encoder.tokenize(docs))
        loss = loss_fn(q, p)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_merge_cli_writes_a_loadable_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from pipeline.cli import app

    a, b = torch.randn(3, 4), torch.randn(3, 4)
    for name, tensor in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        save_file({"w": tensor}, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text("{}")
    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 0, result.output
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))["w"]
    assert torch.allclose(merged, slerp(a, b, 0.5), atol=1e-6)
    assert (tmp_path / "m" / "config.json").exists()


def test_merge_reads_and_writes_sharded_checkpoints(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from pipeline.train.merge import merge_checkpoints

    tensors = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        tensors[name] = {"w1": torch.randn(3, 4), "w2": torch.randn(5)}
        save_file({"w1": tensors[name]["w1"]}, str(folder / "model-00001-of-00002.safetensors"))
        save_file({"w2": tensors[name]["w2"]}, str(folder / "model-00002-of-00002.safetensors"))
        index = {
            "weight_map": {"w1": "model-00001-of-00002.safetensors", "w2": "model-00002-of-00002.safetensors"}
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    out = merge_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    first = load_file(str(out / "model-00001-of-00002.safetensors"))
    second = load_file(str(out / "model-00002-of-00002.safetensors"))
    assert torch.allclose(first["w1"], slerp(tensors["a"]["w1"], tensors["b"]["w1"], 0.5), atol=1e-6)
    assert torch.allclose(second["w2"], slerp(tensors["a"]["w2"], tensors["b"]["w2"], 0.5), atol=1e-6)
    assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]["w2"].startswith(
        "model-0000"
    )


def test_ranking_metrics():
    from pipeline.train.evaluate import ndcg_at_k, recall_at_k

    assert ndcg_at_k(["a", "b"], {"a": 1}) == 1.0
    assert abs(ndcg_at_k(["x", "a"], {"a": 1}) - 1 / math.log2(3)) < 1e-9
    assert recall_at_k(["a", "x"], {"a": 1, "b": 1}) == 0.5


def write_beir(folder):
    import json

    folder.mkdir()
    (folder / "qrels").mkdir()
    docs = {
        "d1": "Tides are caused by the moon's gravity.",
        "d2": "Water boils at 100 degrees Celsius.",
        "d3": "The Mona Lisa was painted by Leonardo da Vinci.",
        "d4": "Python is a programming language.",
    }
    queries = {"q1": "what causes tides", "q2": "boiling point of water", "q3": "who painted the mona lisa"}
    (folder / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in docs.items())
    )
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}) for k, v in queries.items())
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n"
    )


def write_tiny_run(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schema as S

    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    rows = [
        {S.QUERY: q, S.POSITIVE: p, S.NEGATIVES: [n], S.INSTRUCTION: "Given a query, retrieve passages"}
        for q, p, n in [
            ("what causes tides", "The moon's gravity raises the tides.", "Tide pools hold small crabs."),
            ("boiling point of water", "Water boils at 100 degrees.", "Ice melts in the sun."),
            ("who painted the mona lisa", "Leonardo painted the Mona Lisa.", "The Louvre is in Paris."),
            ("speed of light", "Light travels 300,000 km a second.", "Sound is slower than light."),
        ]
    ]
    full = [{name: row.get(name) for name in S.ROW_SCHEMA.names} for row in rows]
    for row in full:
        row.update(
            {
                S.ID: row[S.QUERY],
                S.TASK_TYPE: "retrieval",
                S.LANGUAGE: "en",
                S.PASSAGE_LANGUAGE: "en",
                S.SOURCE_ID: "s",
                S.PASSAGE_ID: "s#0",
                S.MODEL: "m",
                S.PROMPT_HASH: "h",
                S.NEGATIVE_SOURCES: ["mined"],
            }
        )
    pq.write_table(pa.Table.from_pylist(full, schema=S.ROW_SCHEMA), data / "part-00000-00000.parquet")
    return data


def test_train_then_eval_with_minilm(tmp_path, minilm_path, monkeypatch):
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from pipeline.cli import app

    write_tiny_run(tmp_path)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "run"),
            "--model",
            minilm_path,
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--epochs",
            "3",
            "--lr",
            "5e-5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").exists() and (out / "modules.json").exists()
    vectors = SentenceTransformer(str(out), device="cpu").encode(["tides"])  # loads in sentence-transformers
    assert vectors.shape == (1, 384)

    bench = tmp_path / "beir"
    write_beir(bench)
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))  # an empty embedding store

    def evaluate(*extra):
        result = CliRunner().invoke(app, ["eval", "--model", str(out), "--benchmark", str(bench), *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    metrics = evaluate()
    assert metrics["queries"] == 3 and metrics["ndcg@10"] > 0.9 and metrics["recall@100"] == 1.0
    assert (metrics["encoded_documents"], metrics["encoded_queries"]) == (4, 3)
    again = evaluate()  # the same model and corpus: everything comes from the store
    assert (again["encoded_documents"], again["encoded_queries"]) == (0, 0)
    assert again["ndcg@10"] == metrics["ndcg@10"]
    instructed = evaluate("--instruction", "Find the passage that answers the question")
    assert (instructed["encoded_documents"], instructed["encoded_queries"]) == (0, 3)  # only the queries
    # a retrained checkpoint at the same path misses: its files changed
    (out / "model.safetensors").touch()
    assert evaluate()["encoded_documents"] == 4


def test_reranking_reorders_the_embedders_top_documents(tmp_path, minilm_path):
    from pipeline.train.evaluate import evaluate

    bench = tmp_path / "beir"
    write_beir(bench)
    # q4's relevant document says little in the query's words: the embedder ranks it below others
    (bench / "queries.jsonl").write_text(
        (bench / "queries.jsonl").read_text() + "\n" + json.dumps({"_id": "q4", "text": "python programming"})
    )
    (bench / "qrels" / "test.tsv").write_text((bench / "qrels" / "test.tsv").read_text() + "q4\td2\t1\n")
    corpus = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (bench / "corpus.jsonl").read_text().splitlines()
    }
    relevant = {"what causes tides": "d1", "boiling point of water": "d2", "who painted the mona lisa": "d3"}
    relevant["python programming"] = "d2"

    class Oracle:
        """Scores 1 for the labelled document, 0 otherwise (or the reverse: the worst reranker)."""

        def __init__(self, worst=False):
            self.worst = worst
            self.pairs = 0

        def score(self, pairs, instruction=""):
            self.pairs += len(pairs)
            right = [float(corpus[relevant[q]] in d) for q, d in pairs]
            return [1 - x for x in right] if self.worst else right

    best, worst = Oracle(), Oracle(worst=True)
    before = evaluate(minilm_path, bench, reranker=best, rerank_depth=4)
    assert before["ndcg@10"] < 1.0  # q4 is ranked wrong by the embedder
    assert before["reranked_ndcg@10"] == 1.0 and best.pairs == 4 * 4
    after_worst = evaluate(minilm_path, bench, reranker=worst, rerank_depth=4)
    assert after_worst["reranked_ndcg@10"] < before["ndcg@10"]
    assert after_worst["ndcg@10"] == before["ndcg@10"]  # the embedder's own figure is unchanged


def test_reranker_trains_on_rows_with_the_cli(tmp_path, tiny_qwen3):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.train.reranker_trainer import Reranker

    write_tiny_run(tmp_path)
    out = tmp_path / "reranker"
    args = ["train-reranker", "--data", str(tmp_path / "run"), "--model", str(tiny_qwen3), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--epochs", "8", "--batch-size", "8", "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    losses = json.loads((out / "training_log.json").read_text())["losses"]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) < sum(losses[:2])  # it learns the 8 pairs

    reranker = Reranker(str(out))  # the checkpoint loads back
    yes = reranker.score([("what causes tides", "The moon's gravity raises the tides.")])
    no = reranker.score([("what causes tides", "Tide pools hold small crabs.")])
    assert 0 < no[0] < yes[0] < 1


def test_eval_with_a_trained_reranker_from_the_cli(tmp_path, tiny_qwen3, minilm_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    bench = tmp_path / "beir"
    write_beir(bench)
    args = ["eval", "--model", minilm_path, "--benchmark", str(bench), "--reranker", str(tiny_qwen3)]
    result = CliRunner().invoke(app, [*args, "--rerank-depth", "4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["reranker"] == str(tiny_qwen3) and metrics["rerank_depth"] == 4
    # the random-weight reranker reorders the top four; every relevant document stays among them
    assert 0 < metrics["reranked_ndcg@10"] <= 1 and metrics["recall@100"] == 1.0


def test_trec_scores_keep_graded_relevance_and_equal_a_hand_computation():
    from pipeline.train.evaluate import ndcg_at_k, trec_scores

    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"b": 0.9, "x": 0.8, "a": 0.7}, "q2": {"y": 0.9, "z": 0.5}}
    found = trec_scores(qrels, run)
    # q1 ranks b (gain 1), x, a (gain 2); the ideal order is a, b
    q1 = (1 + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert found["ndcg@10"] == pytest.approx((q1 + 0) / 2, abs=1e-6)
    assert found["ndcg@10"] == pytest.approx((ndcg_at_k(["b", "x", "a"], qrels["q1"]) + 0) / 2, abs=1e-6)
    assert found["recall@100"] == pytest.approx((1 + 0) / 2)
    assert found["mrr@10"] == pytest.approx((1 + 0) / 2)
    assert found["map@100"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)
    # binary gains (the old reading of the qrels) would give another figure
    binary = trec_scores({"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}, run)["ndcg@10"]
    assert abs(binary - found["ndcg@10"]) > 0.01


def test_eval_on_a_graded_benchmark_equals_trec_eval_and_skips_self_hits(tmp_path, minilm_path):
    import json

    import pytrec_eval

    from pipeline.train.evaluate import evaluate

    bench = tmp_path / "graded"
    write_beir(bench)
    corpus = [json.loads(line) for line in (bench / "corpus.jsonl").read_text().splitlines()]
    # q1's own text is in the corpus under its id (as in ArguAna), and a second, weaker tide document
    corpus += [
        {"_id": "q1", "title": "", "text": "what causes tides"},
        {"_id": "d5", "title": "", "text": "The sea rises and falls twice a day."},
    ]
    (bench / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    (bench / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td5\t1\nq2\td2\t1\nq3\td3\t3\nq3\td4\t0\n"
    )
    result = evaluate(minilm_path, bench, "test")
    # the same exact search, scored by trec_eval directly on the graded qrels
    from pipeline.train.encoder import Encoder

    encoder = Encoder(minilm_path, max_length=256)
    encoder.eval()
    texts = {r["_id"]: r["text"] for r in corpus}
    queries = {"q1": "what causes tides", "q2": "boiling point of water", "q3": "who painted the mona lisa"}
    ids = sorted(texts)

    def vectors(batch):
        return torch.nn.functional.normalize(encoder.encode(batch).float(), dim=-1)

    docs = vectors([texts[d] for d in ids])
    run = {}
    for qid, text in queries.items():
        scores = (vectors([text]) @ docs.T)[0].tolist()
        run[qid] = {d: float(s) for d, s in zip(ids, scores, strict=True) if d != qid}
    qrels = {"q1": {"d1": 2, "d5": 1}, "q2": {"d2": 1}, "q3": {"d3": 3}}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    assert result["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in trec.values()) / 3, abs=1e-4)
    assert result["recall@100"] == pytest.approx(1.0)
    assert set(result) >= {"ndcg@10", "recall@100", "mrr@10", "map@100"}


def test_eval_through_mteb_gives_the_same_figures_as_synth_eval(tmp_path, minilm_path):
    """``synth eval --mteb SciFact`` scores an on-disk BEIR folder with mteb's own retrieval code
    and the project's encoder behind mteb's model interface: its nDCG@10 equals ours on graded qrels."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("mteb")
    bench = tmp_path / "graded"
    write_beir(bench)
    (bench / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td4\t1\nq2\td2\t1\nq3\td3\t3\nq3\td1\t1\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "eval", "--model", minilm_path, "--benchmark", str(bench)]
        + ["--split", "test", "--mteb", "SciFact", "--no-store"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mine, theirs = result, result["mteb"]
    assert theirs["task"] == "SciFact" and theirs["main_score"] == "ndcg_at_10"
    assert theirs["mteb_ndcg_at_10"] == pytest.approx(mine["ndcg@10"], abs=1e-3)
    assert theirs["mteb_recall_at_100"] == pytest.approx(mine["recall@100"], abs=1e-3)
    assert theirs["mteb_map_at_100"] == pytest.approx(mine["map@100"], abs=1e-3)
    assert mine["ndcg@10"] < 1.0  # the graded second documents are not all first: a real comparison
