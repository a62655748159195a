"""Rows that stream: a run against a simulated continuous-batching server (``bench/sim_server.py``).

Replies come back after random decode lengths and random extra delays, so slices finish in any
order; the rows must still be those of a run that sends one chunk at a time, and the rows out at
once must stay under the bound. The golden test (tests/test_golden.py) checks the same promise
file by file with the fake engine.
"""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from bench.sim_server import SimulatedServer
from pipeline import schema as S
from pipeline.config import load_config
from pipeline.engine.base import EngineClock
from pipeline.engine.openai_engine import DEFAULT_CONCURRENCY, LATENCY_FLOOR, Gate, OpenAIEngine
from pipeline.executors import flow as flow_module
from pipeline.executors import run_generate
from pipeline.generate.replies import QueryOutput

from .conftest import default_answer

PASSAGES, SHARD = 24, 6  # 4 chunks of 6 passages, 12 rows each (retrieval and sts)


@pytest.fixture(scope="module")
def server():
    # 32 slots, 20 ms a step, replies of ~12 tokens, each held up to 50 ms more: out of order
    simulated = SimulatedServer(default_answer, slots=32, step_s=0.02, mean_tokens=12, jitter_s=0.05)
    yield simulated
    simulated.close()


def settings_for(out, minilm_path, *sets) -> list[str]:
    """The runs' settings (later items win): 24 passages in 4 chunks, the reply cache off."""
    return [
        f"output.out_dir={out}",
        f"limit={PASSAGES}",
        f"output.shard_rows={SHARD}",
        "generation.tasks=[retrieval, sts]",
        "generation.languages={en: 1}",
        f"models.embedder={minilm_path}",
        "cache.enabled=false",
        *sets,
    ]


def config_for(out, server, minilm_path, *sets):
    return load_config(
        None, settings_for(out, minilm_path, "models.engine=openai", f"models.base_url={server.url}", *sets)
    )


def rows_of(out) -> list[tuple]:
    rows = pq.read_table(out / "data").to_pylist()
    return sorted((r[S.ID], r[S.QUERY], r[S.POSITIVE], tuple(r[S.NEGATIVES] or ())) for r in rows)


def rejected_of(out) -> list[tuple]:
    if not any((out / "rejected").rglob("*.parquet")):
        return []
    return sorted((r[S.ID], r[S.STAGE], r[S.REASON]) for r in pq.read_table(out / "rejected").to_pylist())


def test_streamed_rows_equal_one_chunk_at_a_time_and_stay_under_the_bound(
    server, minilm_path, tmp_path, monkeypatch
):
    most = {"rows": 0}
    start = flow_module.ChunkFlow.start

    def counting_start(self, *args, **kwargs):
        start(self, *args, **kwargs)
        most["rows"] = max(most["rows"], self.rows_out)

    monkeypatch.setattr(flow_module.ChunkFlow, "start", counting_start)
    # staged: one chunk at a time, each step as one batch
    staged = tmp_path / "staged"
    run_generate(config_for(staged, server, minilm_path, "flow.streamed=false"))
    server.reset()
    streamed = tmp_path / "streamed"
    # slices of 2 rows, up to 24 rows out: two chunks at once
    result = run_generate(
        config_for(streamed, server, minilm_path, "flow.slice_rows=2", "flow.rows_in_flight=24")
    )
    seen = server.stats()
    assert result.stats.rows_in == 2 * PASSAGES
    assert rows_of(streamed) == rows_of(staged) and rows_of(staged)
    assert rejected_of(streamed) == rejected_of(staged)
    assert most["rows"] <= 24  # the bound held
    assert max(busy for _, busy in seen["timeline"]) > 2  # more than one slice's requests at once


def test_the_engine_sends_fewer_while_the_server_answers_429():
    busy = SimulatedServer(default_answer, slots=2, step_s=0.01, mean_tokens=3, queue_limit=2)
    try:
        engine = OpenAIEngine(busy.url, concurrency=24, max_wait_s=0.5)
        task = "### Your task\nPassage (English): Tides rise twice a day {}.\nQuestion type: summary."
        chats = [[{"role": "user", "content": task.format(i)}] for i in range(48)]
        replies = engine.generate(chats, QueryOutput, 32)
        engine.close()
    finally:
        busy.close()
    assert all(r.parsed is not None for r in replies)  # every request answered in the end
    assert busy.stats()["refused_429"] > 0
    assert engine.gate.limit < 24  # the gate came down


def test_the_gate_lowers_once_per_overload_and_climbs_back():
    gate = Gate(10)
    for _ in range(5):  # the requests of one overload answer 429 together: one step down
        gate.throttled()
    assert gate.limit == 7
    for _ in range(7):
        gate.answered()
    assert gate.limit == 8
    gate.limit = 1
    entered = threading.Event()

    def enter():
        with gate:
            entered.set()

    with gate:  # the one place is held: a second request waits for it
        waiter = threading.Thread(target=enter)
        waiter.start()
        assert not entered.wait(0.2)
    waiter.join(5)
    assert entered.is_set() and gate.out == 0


def test_the_gate_lowers_while_replies_slow_down_and_not_below_its_floor(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr("pipeline.engine.openai_engine.time.monotonic", lambda: clock["now"])
    gate = Gate(64)
    for _ in range(50):  # the server's pace: 10 ms a token
        gate.answered(0.5, 50)
    assert gate.limit == 64
    for _ in range(40):  # then requests queue: 5x slower per token, one reply every 100 ms
        clock["now"] += 0.1
        gate.answered(2.5, 50)
    assert LATENCY_FLOOR <= gate.limit < 64
    for _ in range(400):
        clock["now"] += 0.1
        gate.answered(2.5, 50)
    assert gate.limit == LATENCY_FLOOR  # latency alone never goes below the floor


def test_the_engine_keeps_the_servers_reported_limit_in_flight():
    for reports, expected in ((True, 8), (False, DEFAULT_CONCURRENCY)):
        simulated = SimulatedServer(default_answer, slots=8, step_s=0.01, reports_limit=reports)
        try:
            engine = OpenAIEngine(simulated.url)
            assert engine.concurrency == expected and engine.gate.most == expected
            engine.close()
        finally:
            simulated.close()


def test_engine_seconds_of_calls_waiting_side_by_side_add_up_to_the_wall_time(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr("pipeline.engine.base.time.perf_counter", lambda: clock["now"])
    shared = EngineClock()
    with shared.share() as first:  # t=0: one call out
        clock["now"] = 1.0
        with shared.share() as second:  # t=1: two calls out until t=3
            clock["now"] = 3.0
        clock["now"] = 4.0
    assert (first.seconds, second.seconds) == (3.0, 1.0)  # 1 alone + 2 shared by two + 1 alone
    assert first.seconds + second.seconds == 4.0  # the engine was waited on for 4 s, not 6
