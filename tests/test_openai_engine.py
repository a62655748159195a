"""The HTTP engine against a loopback server that fails on purpose, then `synth generate` through it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.engine.openai_engine import EngineStopped, EngineUnavailable, OpenAIEngine
from pipeline.generate.replies import QueryOutput, configure_output

from .conftest import checkpoint_of, child_env, chunks_committed, default_answer, generate_args, send_json


class FakeServer:
    """OpenAI-compatible endpoints; the first ``fail_first`` completions answer 503."""

    def __init__(self, fail_first=0, status=503, delay_s=0.0, too_long=None):
        self.fail_first, self.status, self.delay_s = fail_first, status, delay_s
        self.posts, self.failures, self.auth = 0, 0, set()
        self.too_long = too_long  # prompts holding this text are over the "context length"
        self.echo = None  # prompts holding this text get a 400 that repeats the request's key
        self.refuse_key = False  # every completion answers 401, repeating the key it was sent
        self.dead_after: int | None = None  # from this many posts on, every connection is dropped
        self.model = "fake-served-model"  # what replies name (a test may switch it mid-run)
        self.card = {"root": "/models/fake-v1", "created": 1700000000}  # what /v1/models says of it
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                send_json(self, code, body)

            def do_GET(self):
                self._send(200, {"data": [{"id": "fake-served-model", "object": "model", **server.card}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth.add(self.headers.get("Authorization"))
                with lock:
                    server.posts += 1
                    fail = server.posts <= server.fail_first
                    server.failures += fail
                    dead = server.dead_after is not None and server.posts > server.dead_after
                if dead:  # the connection closes with no reply, as when a server process dies
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fail:
                    self._send(server.status, {"error": "busy"})
                    return
                prompt = body["messages"][-1]["content"]
                said = f"the key {self.headers.get('Authorization')} cannot ask that"  # a careless server
                if server.refuse_key:
                    self._send(401, {"error": {"message": said}})
                    return
                if server.echo and server.echo in prompt:
                    self._send(400, {"error": {"message": said}})
                    return
                if server.too_long and server.too_long in prompt:
                    message = (
                        "This model's maximum context length is 2048 tokens. However, you requested 9000."
                    )
                    self._send(400, {"error": {"message": message, "type": "BadRequestError"}})
                    return
                time.sleep(server.delay_s)
                schema = body["response_format"]["json_schema"]
                output = type(schema["name"], (), {"__name__": schema["name"]})
                output.model_json_schema = staticmethod(lambda: schema["schema"])
                content = default_answer(prompt, output)
                usage = {  # as vLLM's server reports it with --enable-prompt-tokens-details
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": len(content) // 4,
                    "prompt_tokens_details": {"cached_tokens": len(prompt.split("### Your task")[0]) // 4},
                }
                choice = {"message": {"content": content}, "finish_reason": "stop"}
                self._send(200, {"model": server.model, "choices": [choice], "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def chats(n):
    return [
        [
            {
                "role": "user",
                "content": f"### Your task\nPassage (English): Tides rise twice a day {i}.\n"
                "Question type: summary. Language of the query: English.",
            }
        ]
        for i in range(n)
    ]


def test_retries_503_then_succeeds(server):
    srv = server(fail_first=3)
    engine = OpenAIEngine(srv.url, max_attempts=6, max_wait_s=0.2)
    assert engine.model_name == "fake-served-model"
    generations = engine.generate(chats(2), QueryOutput, max_tokens=64)
    assert all(g.parsed is not None for g in generations)
    assert srv.failures == 3 and srv.posts == 5


def test_a_request_failing_after_its_retries_stops_the_batch(server):
    srv = server(fail_first=100, status=429)
    engine = OpenAIEngine(srv.url, max_attempts=3, max_wait_s=0.05)
    with pytest.raises(EngineStopped, match="stopped answering.*after retries.*429"):
        engine.generate(chats(1), QueryOutput, max_tokens=64)
    assert srv.posts == 3
    with pytest.raises(EngineStopped):  # the engine asks no more: the server is gone for this run
        engine.generate(chats(1), QueryOutput, max_tokens=64)
    assert srv.posts == 3


def test_a_server_shut_down_mid_run_stops_the_batch(server):
    srv = server()
    engine = OpenAIEngine(srv.url, max_attempts=2, max_wait_s=0.05)
    assert engine.generate(chats(2), QueryOutput, max_tokens=64)[0].parsed is not None
    srv.close()
    srv.httpd.server_close()  # refused from now on
    with pytest.raises(EngineStopped, match="stopped answering"):
        engine.generate(chats(3), QueryOutput, max_tokens=64)


def test_a_prompt_over_the_context_is_its_own_row_failure(server):
    srv = server(too_long="day 1.")
    engine = OpenAIEngine(srv.url, max_attempts=3, max_wait_s=0.05)
    generations = engine.generate(chats(3), QueryOutput, max_tokens=64)
    assert [g.finish_reason for g in generations] == ["stop", "prompt_too_long", "stop"]
    assert "maximum context length" in generations[1].error and srv.posts == 3  # never retried


def test_client_errors_are_not_retried(server):
    srv = server(fail_first=100, status=400)
    engine = OpenAIEngine(srv.url, max_attempts=5, max_wait_s=0.05)
    (generation,) = engine.generate(chats(1), QueryOutput, max_tokens=64)
    assert generation.parsed is None and srv.posts == 1


def test_unreachable_server_fails_at_start():
    with pytest.raises(EngineUnavailable, match="no OpenAI-compatible server"):
        OpenAIEngine("http://127.0.0.1:9/v1", max_attempts=1)


def test_api_key_from_environment(server, monkeypatch, caplog):
    srv = server(fail_first=1)
    with pytest.raises(EngineUnavailable, match="MY_KEY"):
        OpenAIEngine(srv.url, api_key_env="MY_KEY")
    monkeypatch.setenv("MY_KEY", "sekret")
    engine = OpenAIEngine(srv.url, api_key_env="MY_KEY", max_wait_s=0.05)
    with caplog.at_level("DEBUG"):
        engine.generate(chats(1), configure_output(5, ["summary"], ["phd"]), max_tokens=32)
    assert srv.auth == {"Bearer sekret"}
    assert "retry" in caplog.text and "sekret" not in caplog.text


def http_args(srv, out, minilm_path, limit=8, sets=(), extra=()):
    return generate_args(
        out, minilm_path, limit=limit, sets=sets, extra=["--engine", "openai", "--base-url", srv.url, *extra]
    )


def test_generate_cli_over_http(server, tmp_path, minilm_path):
    srv = server(fail_first=2)
    out = tmp_path / "http"
    args = http_args(srv, out, minilm_path, limit=5, sets=["filters.cosine.mode=percentile"])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "data").to_pylist()
    assert rows and {r[S.MODEL] for r in rows} == {"fake-served-model"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_out"] + sum(stats["dropped"].values()) == 5
    # the server's usage block, cached tokens included, is what the run counts
    query = stats["stages"]["query"]["llm"]
    assert query["requests"] == 5 and query["prompt_tokens"] > query["cached_tokens"] > 0
    assert stats["tokens"]["tokens_per_kept_pair"] > 0


def generate_over_http(srv, out, minilm_path, *extra):
    """A `synth generate` command line for a separate process, 8 passages, against the fake server,
    one chunk out at a time (streamed in slices): a fault then lands between chunks."""
    sets = ["filters.cosine.enabled=false", "flow.rows_in_flight=1"]
    return [sys.executable, "-m", "pipeline.cli", *http_args(srv, out, minilm_path, sets=sets, extra=extra)]


def test_sigterm_stops_cleanly_and_the_rerun_resumes(server, tmp_path, minilm_path):
    srv = server(delay_s=0.3)
    out = tmp_path / "term"
    command = generate_over_http(srv, out, minilm_path, "--set", "output.shard_rows=2")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not chunks_committed(out):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "run the same command again" in stderr
    done = chunks_committed(out)
    assert 1 <= done < 4
    assert not list(out.rglob(".*.tmp"))  # nothing half-written is visible
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 8 and stats["rows_out"] + sum(stats["dropped"].values()) == 8


def test_workers_share_the_tasks(server, tmp_path, minilm_path):
    srv = server()
    out = tmp_path / "workers"
    command = generate_over_http(srv, out, minilm_path, "--num-tasks", "4", "--workers", "2")
    run = subprocess.run(
        command, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (out / "completions").iterdir()) == [f"task-{t:05d}" for t in range(4)]
    assert "tasks to run here: task-00000, task-00002" in run.stderr
    assert "tasks to run here: task-00001, task-00003" in run.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 8 and (out / "manifest.json").exists()


def _wait_for_checkpoint(out, proc, deadline_s=120):
    deadline = time.time() + deadline_s
    while not chunks_committed(out):
        assert proc.poll() is None and time.time() < deadline, proc.poll()
        time.sleep(0.05)


def test_a_server_that_dies_ends_the_run_in_one_line_and_the_rerun_resumes(server, tmp_path, minilm_path):
    srv = server(delay_s=0.2)
    out = tmp_path / "dies"
    command = generate_over_http(
        srv, out, minilm_path, "--set", "output.shard_rows=2", "--set", "models.max_attempts=2"
    )
    proc = subprocess.Popen(
        command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_checkpoint(out, proc)
    srv.dead_after = srv.posts  # from now on every connection drops, as when the server process dies
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert "stopped answering" in line and "run the same command again to resume" in line, line
    done = chunks_committed(out)
    assert 1 <= done < 4 and not list(out.rglob(".*.tmp"))
    srv.dead_after = None  # the server is back
    again = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming after {done} finished chunk(s)" in again.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 8 and stats["rows_out"] + sum(stats["dropped"].values()) == 8
    assert "request_failed" not in stats["dropped"]  # no row was lost to the outage


def test_a_prompt_over_the_context_drops_that_row_and_the_run_goes_on(server, tmp_path, minilm_path):
    srv = server(too_long="Sunlight")  # the sample passage on the blue sky is "too long" here
    out = tmp_path / "long"
    args = http_args(srv, out, minilm_path, limit=8, sets=["filters.cosine.enabled=false"])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    too_long = stats["dropped"].get("prompt_too_long", 0)
    assert too_long >= 1 and stats["rows_out"] >= 1
    rejected = [r for r in pq.read_table(out / "rejected").to_pylist() if r[S.REASON] == "prompt_too_long"]
    assert len(rejected) == too_long and "maximum context length" in rejected[0][S.DETAIL]


def test_the_reply_cache_never_answers_for_another_model_under_the_same_name(server, tmp_path, minilm_path):
    """The server is restarted with retrained weights under the same name: no old reply is served."""
    srv = server()
    cache = ["--cache", str(tmp_path / "replies")]
    runner = CliRunner()
    for name in ("first", "again"):
        result = runner.invoke(app, http_args(srv, tmp_path / name, minilm_path, limit=4, extra=cache))
        assert result.exit_code == 0, result.output
    asked = srv.posts
    assert (
        asked > 0
        and json.loads((tmp_path / "again" / "stats.json").read_text())["tokens"]["reply_cache_hits"]
    )
    srv.card = {"root": "/models/fake-v2-retrained", "created": 1700000000}
    result = runner.invoke(app, http_args(srv, tmp_path / "retrained", minilm_path, limit=4, extra=cache))
    assert result.exit_code == 0, result.output
    assert srv.posts == 2 * asked  # every request asked again
    assert not json.loads((tmp_path / "retrained" / "stats.json").read_text())["tokens"].get(
        "reply_cache_hits"
    )
    # the same model behind another address is another model too
    other = server()
    other.card = dict(srv.card)
    result = runner.invoke(app, http_args(other, tmp_path / "elsewhere", minilm_path, limit=4, extra=cache))
    assert result.exit_code == 0 and other.posts == asked, result.output


def test_a_server_that_switches_model_stops_the_run(server, tmp_path, minilm_path):
    srv = server(delay_s=0.2)
    out = tmp_path / "switch"
    command = generate_over_http(srv, out, minilm_path, "--set", "output.shard_rows=2")
    proc = subprocess.Popen(
        command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_checkpoint(out, proc)
    srv.model = "another-model"  # the server was restarted with another model behind the same URL
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert "'another-model'" in line and "'fake-served-model'" in line and "never mix" in line, line
    rows = pq.read_table(out / "data").to_pylist() if list(out.rglob("data/**/*.parquet")) else []
    committed = checkpoint_of(out)
    assert committed["chunks_done"] >= 1 and {r[S.MODEL] for r in rows} <= {"fake-served-model"}
