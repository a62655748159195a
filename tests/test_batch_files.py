"""Batch files: a run through ``--engine batch``, its requests answered by a loopback batch runner.

The runner answers every line of a round's requests file with the tests' fake model, in a
shuffled order, as ``vllm run-batch`` would write its output. The rows of the run that went
through the rounds must equal those of a live run against the simulated server (the same fake
model behind HTTP). A results file with a line missing or one too many stops the command with
one line and reads nothing in.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sim_server import MODEL, SimulatedServer
from pipeline.cli.generate import read_batch_results
from pipeline.config import load_config
from pipeline.engine.batch_engine import BATCH_EXIT, BatchFiles
from pipeline.executors import run_generate
from pipeline.run.folder import RunFolder

from .conftest import default_answer
from .test_flow import rejected_of, rows_of, settings_for

ROUNDS = 6  # the recipe asks at most four LLM calls of a row; more rounds than that is a loop


@pytest.fixture(scope="module")
def server():
    simulated = SimulatedServer(default_answer, slots=64, step_s=0.002, mean_tokens=8)
    yield simulated
    simulated.close()


def settings(out: Path, minilm_path: str, *sets: str) -> list[str]:
    return settings_for(out, minilm_path, f"models.generator={MODEL}", *sets)


def answer_batch(requests: Path, results: Path, seed: int = 0) -> int:
    """The loopback batch runner: every request answered by the fake model, lines shuffled."""
    lines = []
    for number, raw in enumerate(requests.read_text(encoding="utf-8").splitlines()):
        request = json.loads(raw)
        body = request["body"]
        assert request["url"] == "/v1/chat/completions" and request["method"] == "POST"
        schema = body["response_format"]["json_schema"]
        output = type(schema["name"], (), {})
        output.model_json_schema = staticmethod(lambda schema=schema: schema["schema"])
        content = default_answer(body["messages"][-1]["content"], output)
        reply = {
            "model": body["model"],
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        }
        lines.append(
            {
                "id": f"batch-{number}",
                "custom_id": request["custom_id"],
                "response": {"status_code": 200, "request_id": f"req-{number}", "body": reply},
                "error": None,
            }
        )
    random.Random(seed).shuffle(lines)
    results.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def synth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_rounds_of_batch_files_write_the_rows_of_a_live_run(server, minilm_path, tmp_path):
    live = tmp_path / "live"
    run_generate(
        load_config(
            None, settings(live, minilm_path, "models.engine=openai", f"models.base_url={server.url}")
        )
    )

    out = tmp_path / "batch"
    files = BatchFiles(RunFolder(out).batch_folder)
    # round 1 through the command line: it writes the requests, says where, and exits 4
    sets = [arg for item in settings(out, minilm_path, "models.engine=batch") for arg in ("--set", item)]
    first = synth(*sets)
    assert first.returncode == BATCH_EXIT, first.stderr[-2000:]
    assert f"wait in {files.requests_file(1)}" in first.stderr
    assert "Traceback" not in first.stderr
    config = load_config(None, settings(out, minilm_path, "models.engine=batch"))
    for round in range(1, ROUNDS + 1):
        requests = files.requests_file(round)
        asked = answer_batch(requests, tmp_path / f"results-{round}.jsonl", seed=round)
        assert asked > 0
        read_batch_results(config, str(tmp_path / f"results-{round}.jsonl"))
        result = run_generate(config)
        if not result.batch_waiting:
            break
        assert f"round {round + 1}" in result.batch_waiting
    else:
        pytest.fail(f"still waiting after {ROUNDS} rounds")
    assert round >= 2  # a row's second call was asked once its first was answered
    assert rows_of(out) == rows_of(live) and rows_of(live)
    assert rejected_of(out) == rejected_of(live)
    assert RunFolder(out).manifest_file.exists()
    # every request the run made was asked once: the rounds' files hold no custom id twice
    ids = [
        json.loads(line)["custom_id"]
        for path in sorted(files.folder.glob("requests-*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert len(ids) == len(set(ids))


def test_a_results_file_that_does_not_answer_the_round_stops_with_one_line(server, minilm_path, tmp_path):
    out = tmp_path / "batch"
    sets = [arg for item in settings(out, minilm_path, "models.engine=batch") for arg in ("--set", item)]
    assert synth(*sets).returncode == BATCH_EXIT
    files = BatchFiles(RunFolder(out).batch_folder)
    answered = tmp_path / "answered.jsonl"
    answer_batch(files.requests_file(1), answered)
    whole = answered.read_text(encoding="utf-8").splitlines()
    stranger = json.loads(whole[0])
    stranger["custom_id"] = "0" * 32
    faults = {  # one line missing; one line more, for a request nobody asked
        "missing": (whole[1:], "unanswered"),
        "extra": ([*whole, json.dumps(stranger)], f"line {len(whole) + 1}: custom_id {'0' * 32}"),
    }
    for fault, (lines, expected) in faults.items():
        results = tmp_path / f"{fault}.jsonl"
        results.write_text("\n".join(lines) + "\n", encoding="utf-8")
        stopped = synth(*sets, "--batch-results", str(results))
        assert stopped.returncode == 2, fault
        said = [line for line in stopped.stderr.splitlines() if line.strip()]
        assert len(said) == 1 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
        assert expected in said[0] and str(results) in said[0], said[0]
        # nothing was read in: the round still waits for its results
        assert not files.results_file(1).exists() and not (files.folder / "answers").exists()
