"""The mining pool on the loopback S3 server: built once by every process that asks, each part
encoded once; a build killed mid-way is never used and the next builder finishes it; a changed
corpus gets a new key. The builders are real processes, each with its own local cache, as two
nodes are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from .conftest import child_env

ROOT = Path(__file__).resolve().parents[1]

BUILDER = """
import hashlib, json, os, signal, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import pipeline.embed.pool_build as pool_build
from pipeline.embed.pool import PassagePool
from pipeline.readers.passages import Passage
from pipeline.storage import location
from tests.test_index import CountingEmbedder

pool_build.PART_ROWS = 40
pool_build.WAIT_SECONDS = 0.2

class Embedder(CountingEmbedder):
    def encode(self, texts, show_progress=False, role="passage"):
        if self.encoded >= {die_after}:
            os.kill(os.getpid(), signal.SIGKILL)  # a node lost mid-build, its part's lease held
        time.sleep({pause})  # builders side by side: each takes parts while the other encodes
        self.encoded += len(texts)
        # seeded by the text's digest, not hash(): every process encodes a text alike
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        out = np.array([np.random.default_rng(seed).normal(size=16) for seed in seeds])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

embedder = Embedder()
passages = [Passage(f"p{{i}}#0", f"d{{i}}", None, f"passage {{i}}", "en") for i in range({count})]
pool = PassagePool.build(lambda: iter(passages), embedder, location({store!r}), {cache!r})
_, ids = pool.nearest(embedder.encode(["passage 7"]), 1)
print(json.dumps({{"encoded": embedder.encoded - 1, "folder": str(pool.folder), "nearest": int(ids[0, 0])}}))
"""


def builder(store: str, cache: Path, count: int = 200, die_after: int = 10**9, pause: float = 0.3):
    code = BUILDER.format(
        root=str(ROOT), store=store, cache=str(cache), count=count, die_after=die_after, pause=pause
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def finished(process) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_nodes_and_a_later_run_share_one_pool_on_s3_built_once(s3_server, tmp_path):
    store = s3_server.bucket("pools-shared") + "/pools"
    first, second = (
        builder(store, tmp_path / "node-a", pause=0.6),
        builder(store, tmp_path / "node-b", pause=0.6),
    )
    a, b = finished(first), finished(second)
    # 200 passages in 5 parts: each part encoded once, by one of the two
    assert a["encoded"] + b["encoded"] == 200 and a["encoded"] and b["encoded"]
    assert a["nearest"] == b["nearest"] == 7
    fs = s3_server.filesystem()
    (key,) = [p.rsplit("/", 1)[-1] for p in fs.ls("pools-shared/pools")]  # the parts' folder is gone
    meta = json.loads(fs.cat(f"pools-shared/pools/{key}/meta.json"))
    assert meta["size"] == 200 and sum(m["passages"] for m in meta["built_by"].values()) == 200
    # each node reads its own copy
    assert Path(a["folder"]).parent == tmp_path / "node-a" and Path(b["folder"]).parent == tmp_path / "node-b"
    assert (Path(a["folder"]) / "vectors.f16").read_bytes() == (
        Path(b["folder"]) / "vectors.f16"
    ).read_bytes()

    later = finished(builder(store, tmp_path / "node-c"))  # a later run on a third node
    assert later["encoded"] == 0 and later["nearest"] == 7

    changed = finished(builder(store, tmp_path / "node-a", count=201))  # one passage more: a new key
    assert changed["encoded"] == 201 and Path(changed["folder"]).name != key


def test_a_build_killed_mid_way_is_not_used_and_the_next_builder_finishes_it(s3_server, tmp_path):
    from pipeline.embed.pool import PassagePool

    store = s3_server.bucket("pools-killed") + "/pools"
    killed = builder(store, tmp_path / "node-a", die_after=80, pause=0)
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    fs = s3_server.filesystem()
    (build,) = fs.ls("pools-killed/pools")
    assert build.endswith(".build")  # no pool folder, so no meta.json: nothing can use it
    done = [n for n in fs.ls(build) if n.endswith(".json")]
    assert len(done) == 2  # two parts of 40 encoded before the kill

    rest = finished(builder(store, tmp_path / "node-b", pause=0))
    assert rest["encoded"] == 200 - 80  # the dead builder's part lease was taken over at once
    whole = finished(builder(s3_server.bucket("pools-whole") + "/pools", tmp_path / "node-c", pause=0))
    assert Path(rest["folder"]).name == Path(whole["folder"]).name
    resumed, scratch = PassagePool(Path(rest["folder"])), PassagePool(Path(whole["folder"]))
    assert np.array_equal(np.asarray(resumed.vectors), np.asarray(scratch.vectors))
    assert resumed.passages(range(200)) == scratch.passages(range(200))
