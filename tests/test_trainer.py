"""synth train / train-reranker on the field's trainers: the improved InfoNCE inside
SentenceTransformerTrainer (plain, cached, Matryoshka), no repeated text in a batch, gradient
accumulation, checkpoints and --resume after a real crash, two processes over gloo, devices."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from pipeline import schema as S
from pipeline.faults import CRASH_EXIT
from pipeline.train.losses import ImprovedInfoNCE

from .test_train import write_tiny_run
from .test_vectors import prompted_copy

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def still_minilm(minilm_path, tmp_path_factory) -> str:
    """all-MiniLM-L6-v2 without dropout: two ways of computing one update give the same weights."""
    folder = tmp_path_factory.mktemp("still-minilm") / "model"
    shutil.copytree(minilm_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def write_rows(folder: Path, count: int, shared_positive: int = 0) -> Path:
    """``count`` rows with one negative each; the first ``shared_positive`` rows share one passage."""
    template = pq.read_table(write_tiny_run(folder / "template")).to_pylist()[0]
    data = folder / "data"
    data.mkdir(parents=True)
    rows = [
        template
        | {S.ID: f"r{i}", S.QUERY: f"question number {i} about topic {i * 7 % 11}"}
        | {S.POSITIVE: "one shared passage" if i < shared_positive else f"passage {i} on topic {i * 7 % 11}"}
        | {S.NEGATIVES: [f"an unrelated note {i}"]}
        for i in range(count)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=S.ROW_SCHEMA), data / "part-00000-00000.parquet")
    return data


def features(model, texts):
    return model.tokenize(texts)


def columns(model):
    return [
        features(model, ["tides and the moon", "boiling water", "mona lisa painter", "speed of light"]),
        features(
            model,
            ["The moon raises tides.", "Water boils at 100 C.", "Leonardo painted it.", "Light is fast."],
        ),
        features(model, ["Crabs live in pools.", "Ice melts.", "The Louvre is in Paris.", "Sound is slow."]),
    ]


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_trainer_loss_is_the_papers_loss_plain_cached_and_matryoshka(minilm_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    from pipeline.train.losses.trainer_loss import ImprovedInfoNCELoss

    model = SentenceTransformer(minilm_path, device="cpu")
    model.eval()  # no dropout: the plain and cached passes see the same network
    cols = columns(model)
    with torch.no_grad():
        q, p, n = (model(dict(c))["sentence_embedding"] for c in cols)
    expected = ImprovedInfoNCE(temperature=0.05)(q, p, n.unsqueeze(1))

    plain = ImprovedInfoNCELoss(model, temperature=0.05)
    value = plain([dict(c) for c in cols], None)
    assert torch.allclose(value, expected, atol=1e-5)
    value.backward()
    plain_grads = grads(model)
    model.zero_grad()

    cached = ImprovedInfoNCELoss(model, temperature=0.05, mini_batch_size=1)
    value = cached([dict(c) for c in cols], None)
    value.backward()  # the hook re-embeds each mini-batch with the cached gradients
    assert torch.allclose(value, expected, atol=1e-5)
    for mine, ref in zip(grads(model), plain_grads, strict=True):
        assert torch.allclose(mine, ref, atol=1e-5)
    model.zero_grad()

    truncated = sum(
        ImprovedInfoNCE()(q[:, :d], p[:, :d], n[:, :d].unsqueeze(1)) for d in (384, 64)
    )  # the wrapped loss renormalises: truncate, then normalise
    for inner in (ImprovedInfoNCELoss(model), ImprovedInfoNCELoss(model, mini_batch_size=2)):
        wrapped = MatryoshkaLoss(model, inner, matryoshka_dims=[384, 64])
        value = wrapped([dict(c) for c in cols], None)
        assert torch.allclose(value.detach(), truncated, atol=1e-5)
        value.backward()
        assert all(torch.isfinite(g).all() for g in grads(model))
        model.zero_grad()


def test_a_batch_never_repeats_a_text_and_every_step_is_logged(tmp_path, minilm_path, monkeypatch):
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    from pipeline.train.trainer import TrainConfig, train

    seen: list[list[str]] = []
    original = SentenceTransformerDataCollator.__call__

    def spy(self, examples):
        seen.append([text for e in examples for k, text in e.items() if isinstance(text, str)])
        return original(self, examples)

    monkeypatch.setattr(SentenceTransformerDataCollator, "__call__", spy)
    data = write_rows(tmp_path, 12, shared_positive=6)  # six rows share their passage
    out = tmp_path / "model"
    losses = train(data, minilm_path, out, TrainConfig(batch_size=4, epochs=2, save_every=0))
    assert seen and all(len(texts) == len(set(texts)) for texts in seen)
    log = json.loads((out / "training_log.json").read_text())
    assert len(losses) == log["steps"] == log["planned_steps"] == len(seen) == 2 * (12 // 4)
    assert log["config"]["batch_size"] == 4 and log["rows"] == 12 and log["device"] == "cpu"
    assert log["precision"] == "float32" and log["samples_per_second"] > 0
    assert min(losses) > 0 and not (out / "checkpoints").exists()


def test_gradient_caching_and_accumulation_train_as_documented(tmp_path, still_minilm):
    from pipeline.train.trainer import TrainConfig, train

    data = write_rows(tmp_path, 8)
    base = dict(batch_size=4, epochs=1, lr=1e-4, warmup_ratio=0.0, save_every=0)
    plain = train(data, still_minilm, tmp_path / "plain", TrainConfig(**base))
    cached = train(data, still_minilm, tmp_path / "cached", TrainConfig(**base, mini_batch=2))
    assert len(plain) == len(cached) == 2
    assert all(abs(a - b) < 1e-5 for a, b in zip(plain, cached, strict=True))
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "cached" / "model.safetensors"))
    start = load_file(str(Path(still_minilm) / "model.safetensors"))
    name = next(k for k in a if k.endswith("attention.self.query.weight"))
    assert not torch.allclose(a[name], start[name])  # it trained
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # the same updates, step for step

    accumulated = train(
        data, still_minilm, tmp_path / "accumulated", TrainConfig(**base | {"batch_size": 2}, accumulate=2)
    )
    log = json.loads((tmp_path / "accumulated" / "training_log.json").read_text())
    assert len(accumulated) == log["steps"] == 2  # 8 rows, 2 a batch, 2 batches an optimizer step


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _train_command(data: Path, model: str, out: Path, *extra: str) -> list[str]:
    args = ["train", "--data", str(data), "--model", model, "--out", str(out)]
    return [*CLI, *args, "--batch-size", "2", "--epochs", "2", "--lr", "1e-4", *extra]


def test_resume_after_a_crash_at_a_checkpoint_gives_the_uninterrupted_model(tmp_path, still_minilm):
    data = write_rows(tmp_path, 8)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = run(_train_command(data, still_minilm, tmp_path / "whole", "--save-every", "0"), env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "training on cpu (CPU, float32)" in whole.stdout

    out = tmp_path / "resumed"
    crash = {**env, "SYNTH_CRASH_AT": "after_train_checkpoint@3"}
    first = run(_train_command(data, still_minilm, out, "--save-every", "2"), crash)
    assert first.returncode == CRASH_EXIT, first.stderr[-2000:]
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["checkpoint-4", "checkpoint-6"] and not (out / "training_log.json").exists()

    again = run(_train_command(data, still_minilm, out, "--save-every", "2", "--resume"), env)
    assert again.returncode == 0, again.stderr[-2000:]
    log = json.loads((out / "training_log.json").read_text())
    expected = json.loads((tmp_path / "whole" / "training_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-6" and log["steps"] == expected["steps"] == 8
    assert len(log["losses"]) == 8
    assert all(abs(a - b) < 1e-5 for a, b in zip(log["losses"], expected["losses"], strict=True))
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not (out / "checkpoints").exists()


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"],
}


@pytest.mark.parametrize("launcher_name", sorted(LAUNCHERS))
def test_two_processes_over_gloo_train_one_model_on_the_global_batch(tmp_path, still_minilm, launcher_name):
    """torchrun (or accelerate launch) with 2 CPU processes of 2 rows each trains as one process
    with batches of 4: the embeddings are gathered, so every query meets the other process's rows
    as negatives."""
    data = write_rows(tmp_path, 8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, *LAUNCHERS[launcher_name]]
    args = ["train", "--data", str(data), "--model", still_minilm, "--out", str(tmp_path / "two")]
    common = ["--lr", "1e-4", "--save-every", "0"]
    two = run([*launcher, "-m", "pipeline.cli", *args, "--batch-size", "2", *common], env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "training on cpu (CPU, float32, 2 processes)" in two.stdout
    single = run([*CLI, *args[:-1], str(tmp_path / "one"), "--batch-size", "4", *common], env)
    assert single.returncode == 0, single.stderr[-3000:]
    log = json.loads((tmp_path / "two" / "training_log.json").read_text())
    one = json.loads((tmp_path / "one" / "training_log.json").read_text())
    assert log["processes"] == 2 and one["processes"] == 1 and log["steps"] == one["steps"] == 2
    assert all(abs(a - b) < 1e-4 for a, b in zip(log["losses"], one["losses"], strict=True))
    a, b = (
        load_file(str(tmp_path / "two" / "model.safetensors")),
        load_file(str(tmp_path / "one" / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_decoder_trains_with_last_token_pooling_and_evaluates_as_it_trained(tmp_path, tiny_qwen3):
    from sentence_transformers import SentenceTransformer

    from pipeline.train.encoder import Encoder
    from pipeline.train.trainer import TrainConfig, train

    data = write_rows(tmp_path, 8)
    out = tmp_path / "model"
    losses = train(data, str(tiny_qwen3), out, TrainConfig(batch_size=4, epochs=4, lr=3e-3, save_every=0))
    assert sum(losses[-2:]) < sum(losses[:2])
    log = json.loads((out / "training_log.json").read_text())
    assert log["pooling"] == "lasttoken" and log["instruction"] is True
    texts = ["a short text", "a much longer text that pads the short one in a batch"]
    encoder = Encoder(str(out), device="cpu")  # what synth eval reads
    assert encoder.pooling == "last"
    mine = encoder.encode(texts)
    model = SentenceTransformer(str(out), device="cpu")
    theirs = model.encode([t + model.tokenizer.eos_token for t in texts], convert_to_tensor=True)
    assert torch.allclose(mine, theirs.cpu(), atol=1e-4)


def test_the_device_and_its_precision_are_decided_once(monkeypatch, tmp_path):
    from pipeline.train import device as D
    from pipeline.train.config import TrainConfig
    from pipeline.train.lifecycle import trainer_arguments

    monkeypatch.delenv("SYNTH_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.best_device() == torch.device("cuda", 1)
    args = trainer_arguments(TrainConfig(), tmp_path, rows=100)
    assert args["bf16"] and not args["fp16"] and not args["use_cpu"] and args["ddp_backend"] is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert D.mixed_precision(D.best_device()) == "fp16"
    monkeypatch.setenv("SYNTH_DEVICE", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = trainer_arguments(TrainConfig(), tmp_path, rows=100)
    assert args["use_cpu"] and not args["bf16"] and args["ddp_backend"] == "gloo"


def test_a_prompted_model_trains_with_its_prompts_and_a_decoder_with_the_instruction(tmp_path, minilm_path):
    """The model's configured query/document prompts go to the trainer per column, as
    sentence-transformers would put them before the texts; queries that carry the row's
    instruction (decoders) get no query prompt on top."""
    from pipeline.train.trainer import _prompts, sentence_model

    prompts = {"query": "search_query: ", "document": "search_document: "}
    model = sentence_model(str(prompted_copy(minilm_path, tmp_path / "prompted", prompts)), 64)
    assert _prompts(model, instruction=False, negatives=2) == {
        "anchor": "search_query: ",
        "positive": "search_document: ",
        "negative_1": "search_document: ",
        "negative_2": "search_document: ",
    }
    with_instruction = _prompts(model, instruction=True, negatives=1)
    assert with_instruction == {"positive": "search_document: ", "negative_1": "search_document: "}
    assert _prompts(sentence_model(minilm_path, 64), instruction=False, negatives=1) is None


@pytest.mark.parametrize("case", ["no shards", "empty shard", "missing model"])
def test_bad_training_input_is_one_line_before_any_model_loads(tmp_path, case):
    from pipeline.run.shards import write_table

    data, model = tmp_path / "run", "./no-such-model"
    if case == "empty shard":
        write_table([], S.ROW_SCHEMA, data / "data" / "part-00000-00000.parquet")
    elif case == "missing model":
        data = write_rows(tmp_path, 2)
    else:
        data.mkdir()
    out = tmp_path / "model"
    done = run([*CLI, "train", "--data", str(data), "--model", model, "--out", str(out)], dict(os.environ))
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    expected = {"no shards": "no row shards", "empty shard": "hold no rows", "missing model": "no such model"}
    assert len(lines) == 1 and expected[case] in lines[0], done.stderr
    assert not out.exists()


@pytest.mark.parametrize("case", ["no benchmark", "no such split", "unknown mteb task", "not retrieval"])
def test_bad_evaluation_input_is_one_line_before_any_model_loads(tmp_path, case, minilm_path):
    from .test_train import write_beir

    bench = tmp_path / "bench"
    if case != "no benchmark":
        write_beir(bench)
    extra = {
        "no benchmark": [],
        "no such split": ["--split", "dev"],
        "unknown mteb task": ["--mteb", "NoSuchTask"],
        "not retrieval": ["--mteb", "STSBenchmark"],
    }[case]
    done = run([*CLI, "eval", "--model", minilm_path, "--benchmark", str(bench), *extra], dict(os.environ))
    expected = {
        "no benchmark": "no corpus.jsonl",
        "no such split": "no qrels/dev.tsv",
        "unknown mteb task": "not an MTEB task name",
        "not retrieval": "takes a retrieval task",
    }[case]
    if case in ("unknown mteb task", "not retrieval"):
        pytest.importorskip("mteb")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], done.stderr
