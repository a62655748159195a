"""A Ray cluster of several nodes with no shared folder: the output on the loopback S3 server, a node lost.

The cluster (``ray.cluster_utils.Cluster``: a head with no CPUs, three one-CPU worker nodes)
runs in a child process, as its own Ray instance beside the session's. Two replicas run three
tasks; once a shard has landed in the bucket, the node holding a task's lease is removed (its
raylet and every worker on it killed, as a lost machine). The run must finish, on the nodes
left, with exactly the rows of an uninterrupted local run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.executors import run_generate

from .conftest import FakeEngine, child_env, default_answer
from .test_golden import attempt_free
from .test_ray_executor import fake_config

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, threading, time
sys.path.insert(0, {root!r})
import ray
from ray.cluster_utils import Cluster
import psutil
from pipeline.executors import run_generate
from pipeline.executors.ray import RayOptions
from pipeline.storage import location
from tests.conftest import default_answer, lease_holders
from tests.test_ray_executor import SlowEngine, fake_config

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0, "include_dashboard": False}})
workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
cluster.wait_for_nodes()
env = {{"PYTHONPATH": {root!r}, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}}
ray.init(
    address=cluster.address, runtime_env={{"env_vars": env}}, logging_level="WARNING", log_to_driver=False
)
out = {out!r}
outcome = {{}}

def drive():
    try:
        options = RayOptions(address=cluster.address, replicas=2, cpus_per_replica=1)
        config = fake_config(out, {minilm!r})
        engine = SlowEngine(default_answer)
        result = run_generate(config, engine=engine, executor="ray", ray_options=options)
        outcome["rows"] = result.stats.rows_out
    except BaseException as exc:
        outcome["error"] = repr(exc)

driver = threading.Thread(target=drive, daemon=True)
driver.start()
progress, data = location(out) / "progress", location(out) / "data"
removed = None
deadline = time.time() + 300
while removed is None and driver.is_alive() and time.time() < deadline:
    holders = lease_holders(out, 3)
    if holders and data.exists() and list(data.rglob("part-*.parquet")):
        pid = holders[0]["pid"]
        try:  # the node whose raylet started the lease holder's worker process
            ancestors = {{p.pid for p in psutil.Process(pid).parents()}}
        except psutil.NoSuchProcess:
            continue
        raylets = {{w: {{i.process.pid for i in w.all_processes.get("raylet", [])}} for w in workers}}
        node = next((w for w, pids in raylets.items() if pids & ancestors), None)
        if node is not None:
            cluster.remove_node(node, allow_graceful=False)  # the machine is gone, mid-task
            removed = {{"node": node.node_id, "pid": pid}}
    time.sleep(0.2)
driver.join(timeout=400)
print("RESULT " + json.dumps({{"removed": removed, "alive": driver.is_alive(), **outcome}}), flush=True)
ray.shutdown()
cluster.shutdown()
"""


def rows_of(folder) -> dict:
    data = pq.read_table(folder / "data").to_pylist()
    rejected = pq.read_table(folder / "rejected").to_pylist()
    return {
        "kept": sorted((r[S.ID], r[S.QUERY]) for r in data),
        "dropped": sorted((r[S.ID], r[S.STAGE], r[S.REASON]) for r in rejected),
    }


def test_a_node_lost_mid_run_changes_no_row(s3_server, minilm_path, tmp_path):
    local = tmp_path / "local"
    run_generate(fake_config(local, minilm_path), engine=FakeEngine(default_answer))
    out = s3_server.bucket("cluster-out") + "/run"
    script = CHILD.format(root=str(ROOT), out=out, minilm=minilm_path)
    child = subprocess.run(
        [sys.executable, "-c", script], env=child_env(), capture_output=True, text=True, timeout=600
    )
    (tmp_path / "child.log").write_text(child.stdout + "\n----\n" + child.stderr)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert child.returncode == 0 and lines, (child.stdout[-3000:], child.stderr[-6000:])
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["removed"], f"the run ended before a node could be removed: {result}"
    assert not result["alive"] and "error" not in result, result
    copied = tmp_path / "copied"
    s3_server.filesystem().get(out.removeprefix("s3://") + "/", str(copied), recursive=True)
    assert rows_of(copied) == rows_of(local)  # every row once, the same replies
    stats = json.loads((copied / "stats.json").read_text())
    expected = json.loads((local / "stats.json").read_text())
    assert stats["rows_in"] == expected["rows_in"] and stats["rows_out"] == expected["rows_out"]
    manifest, reference = (json.loads((f / "manifest.json").read_text()) for f in (copied, local))
    assert [attempt_free(s["path"]) for s in manifest["shards"]] == [
        attempt_free(s["path"]) for s in reference["shards"]
    ]
    assert sorted(p.name for p in (copied / "completions").iterdir()) == [f"task-{t:05d}" for t in range(3)]
