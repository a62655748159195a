"""Runs on object storage: a real S3 server on loopback (moto's server mode) and the loopback Hub.

The corpus is read from one bucket and the run written to another; every command that reads
a run (stats, export, report, publish, ``datasets.load_dataset``) reads it from the bucket.
The same run on local disk is the reference: the rows must be the same. The S3 secret of the
session is looked for in every output, file and log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.readers.documents import sample_corpus_path
from pipeline.run.folder import LeaseHeld, RunFolder, RunStateError

from .conftest import S3_SECRET, child_env, run_fake
from .test_golden import snapshot

SETTINGS = ["limit=10", "output.num_tasks=2", "output.shard_rows=3", "generation.tasks=[retrieval, sts]"]


def _run(corpus: str, out: str, minilm_path: str):
    return run_fake(
        f"corpus.path={corpus}",
        f"output.out_dir={out}",
        f"models.embedder={minilm_path}",
        "cache.enabled=false",  # both runs compute every reply, so their stats agree
        *SETTINGS,
    )


def _bucket_snapshot(fs, url: str, local) -> dict:
    """The run's files copied down from the bucket, compared as the golden test compares runs."""
    fs.get(url.removeprefix("s3://") + "/", str(local), recursive=True)
    return snapshot(local)


def _without_paths(files: dict, replace: dict[str, str]) -> str:
    text = json.dumps(files, sort_keys=True, ensure_ascii=False)
    for path, placeholder in replace.items():
        text = text.replace(path, placeholder)
    return text


@pytest.fixture(scope="module")
def bucket_run(s3_server, minilm_path, tmp_path_factory):
    """(corpus URL, run URL, local reference run folder): the same run in a bucket and on disk."""
    fs = s3_server.filesystem()
    corpus = s3_server.bucket("corpus-in") + "/docs"
    for language in ("en", "zh"):
        fs.put_file(str(sample_corpus_path(language)), f"{corpus}/{language}.jsonl")
    local_corpus = tmp_path_factory.mktemp("corpus")
    fs.get(corpus.removeprefix("s3://") + "/", str(local_corpus), recursive=True)
    out = s3_server.bucket("runs-out") + "/out"  # the card is titled by the folder name, as the local one
    result = _run(corpus, out, minilm_path)
    reference = tmp_path_factory.mktemp("local") / "out"
    _run(str(local_corpus), str(reference), minilm_path)
    assert result.stats.rows_in == 20  # 10 passages x 2 task types
    return corpus, out, reference, local_corpus


def test_the_bucket_run_writes_the_rows_of_the_local_run(bucket_run, s3_server, minilm_path, tmp_path):
    corpus, out, reference, local_corpus = bucket_run
    fs = s3_server.filesystem()
    copied = tmp_path / "copied"
    found, expected = _bucket_snapshot(fs, out, copied), snapshot(reference)
    assert sorted(found) == sorted(expected)
    for name in found:  # the corpus's location differs, nothing else
        bucket = _without_paths(found[name], {corpus: "<CORPUS>", out: "<OUT>"})
        assert bucket == _without_paths(expected[name], {str(local_corpus): "<CORPUS>"}), name
    # the checkpoint committed exactly the shards in the bucket; nothing hidden or temporary there
    folder = RunFolder(out)
    assert folder.remote and sorted(folder.committed(2)) == sorted(
        folder.relative(p) for p in folder.data_shards() + folder.rejected_shards()
    )
    assert not [name for name in fs.find(out) if "/." in name]
    run_json = json.loads(fs.cat_file(out.removeprefix("s3://") + "/run.json"))
    assert all("etag" in f for f in run_json["corpus"]["files"])  # the input is pinned by ETag
    # rerunning a finished run in the bucket does nothing
    again = _run(corpus, out, minilm_path)
    assert again.stats.rows_out == found["stats.json"]["rows_out"]


def test_every_reader_of_a_run_reads_it_from_the_bucket(bucket_run, s3_server, tmp_path, monkeypatch):
    from datasets import load_dataset

    from .hub_server import LoopbackHub

    corpus, out, reference, _ = bucket_run
    fs = s3_server.filesystem()
    runner = CliRunner()
    stats = runner.invoke(app, ["stats", out])
    assert stats.exit_code == 0 and "retrieval" in stats.output, stats.output
    export = runner.invoke(app, ["export", out, "--format", "flagembedding"])
    assert export.exit_code == 0, export.output
    exported = fs.cat_file(out.removeprefix("s3://") + "/export/flagembedding/retrieval.jsonl").decode()
    kept = pq.read_table(reference / "data" / "retrieval").num_rows
    assert len(exported.splitlines()) == kept > 0
    report = runner.invoke(app, ["report", out])
    assert report.exit_code == 0 and fs.cat_file(out.removeprefix("s3://") + "/report.html").startswith(b"<")
    # the dataset loads straight from the bucket (the trainer's side)
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # offline for hubs, not for our bucket
    options = {"endpoint_url": s3_server.endpoint}
    rows = load_dataset(
        "parquet",
        data_files=f"{out}/data/retrieval/*.parquet",
        storage_options=options,
        split="train",
        cache_dir=str(tmp_path / "datasets"),
    )
    assert sorted(rows[S.ID]) == sorted(pq.read_table(reference / "data" / "retrieval")[S.ID].to_pylist())
    token = "hf_loopbackStorageToken987654"
    with LoopbackHub(tmp_path / "hub", token) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        published = runner.invoke(app, ["publish", out, "--repo-id", "team/from-bucket"])
    assert published.exit_code == 0, published.output
    (commit,) = hub.commits
    manifest = json.loads(fs.cat_file(out.removeprefix("s3://") + "/manifest.json"))
    for shard in manifest["shards"]:  # byte for byte what the bucket holds
        assert commit["files"][shard["path"]] == fs.cat_file(out.removeprefix("s3://") + "/" + shard["path"])
    seen = stats.output + export.output + report.output + published.output
    seen += "".join(
        fs.cat_file(name).decode("utf-8", "ignore") for name in fs.find(out.removeprefix("s3://"))
    )
    seen += "".join(
        p.read_text(errors="ignore") for p in RunFolder(out).logs_folder.rglob("*") if p.is_file()
    )
    assert S3_SECRET not in seen and "loopback-key-id" not in seen


def test_a_changed_object_stops_the_rerun_by_name(bucket_run, s3_server, minilm_path):
    corpus, _, _, _ = bucket_run
    fs = s3_server.filesystem()
    out = s3_server.bucket("runs-changed") + "/run"
    run_fake(f"corpus.path={corpus}", f"output.out_dir={out}", f"models.embedder={minilm_path}", "limit=2")
    target = corpus.removeprefix("s3://") + "/en.jsonl"
    original = fs.cat_file(target)
    fs.pipe_file(target, original + b'{"id": "new", "text": "A row added after the run began."}\n')
    try:
        with pytest.raises(
            RunStateError, match=r"s3://corpus-in/docs/en.jsonl changed since the run started"
        ):
            run_fake(
                f"corpus.path={corpus}", f"output.out_dir={out}", f"models.embedder={minilm_path}", "limit=2"
            )
    finally:
        fs.pipe_file(target, original)


def test_a_second_writer_is_refused_while_the_bucket_lease_is_live(s3_server, monkeypatch):
    from pipeline.run.lease import newest, version_path

    out = s3_server.bucket("runs-lease") + "/run"
    state = RunFolder(out).task(0)
    with state.lease(wait=0) as first:
        with pytest.raises(LeaseHeld, match="task-00000 is being written by process"):
            state.lease(wait=0.5).acquire()
        assert first.confirm() == first.version  # still the owner
    # released: the next writer takes it at once
    with state.lease(wait=0) as second:
        assert second.version == first.version + 1  # after the released version first wrote
    # a writer elsewhere that stopped renewing longer ago than the lease time (the store's clock)
    monkeypatch.setenv("SYNTH_LEASE_SECONDS", "2")
    version = newest(state.task_folder)[0] + 1
    path = version_path(state.task_folder, version)
    path.fs.pipe_file(
        path.path, json.dumps({"owner": "gone", "state": "held", "host": "x", "pid": 1}).encode()
    )
    with pytest.raises(LeaseHeld):
        state.lease(wait=0).acquire()
    time.sleep(3)
    with state.lease(wait=0) as taker:
        assert newest(state.task_folder) == (version + 1, newest(state.task_folder)[1])
        assert newest(state.task_folder)[1]["owner"] == taker.owner


def test_a_bad_location_is_one_line_before_any_model_loads(s3_server, tmp_path):
    """No bucket, a secret in the URL: the CLI says so in one line, exit 2, no traceback."""
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--limit", "2"]
    for where, expected in [
        (["--out", "s3://no-such-bucket/run"], "s3://no-such-bucket/run: cannot write there"),
        (
            ["--corpus", "s3://no-such-bucket/docs", "--out", str(tmp_path / "o")],
            "docs: no such file or folder",
        ),
        (["--out", f"s3://key:{S3_SECRET}@runs-out/run"], "credentials in a URL"),
    ]:
        done = subprocess.run(
            [*command, *where], env=child_env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert S3_SECRET not in done.stderr + done.stdout


def test_an_hf_corpus_is_read_file_by_file_with_range_requests(minilm_path, tmp_path, monkeypatch):
    """``hf://datasets/...``: listed once, each file read in blocks, never downloaded whole first."""
    import huggingface_hub.constants

    from .hub_server import LoopbackHub

    files = tmp_path / "hub" / "team" / "pages" / "main" / "data"
    files.mkdir(parents=True)
    (files / "en.jsonl").write_bytes(sample_corpus_path("en").read_bytes())
    rows = [json.loads(line) for line in sample_corpus_path("zh").read_text().splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), files / "zh.parquet", row_group_size=4)
    (files / "README.md").write_text("not a corpus file: skipped")
    sets = [f"models.embedder={minilm_path}", "output.num_tasks=3", "generation.tasks=[retrieval]"]
    local = run_fake(f"corpus.path={files}", f"output.out_dir={tmp_path / 'local-run'}", *sets)
    with LoopbackHub(tmp_path / "hub", "hf_unused") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        # online for this test's own Hub only: every Hub request (a tokenizer look-up too) goes there
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        url = "hf://datasets/team/pages/data"
        on_hub = run_fake(f"corpus.path={url}", f"output.out_dir={tmp_path / 'hub-run'}", *sets)
        ranges = [r for r in hub.requests if "/datasets/team/pages/resolve/" in r["path"]]
    ids = [
        pq.read_table(tmp_path / name / "data", columns=[S.ID])[S.ID].to_pylist()
        for name in ("hub-run", "local-run")
    ]
    assert sorted(ids[0]) == sorted(ids[1]) and on_hub.stats.rows_in == local.stats.rows_in > 0
    run = json.loads((tmp_path / "hub-run" / "run.json").read_text())
    sources = [f["source"].rsplit("/", 1)[-1] for f in run["corpus"]["files"]]
    assert sources == ["en.jsonl", "zh.parquet", "data#skipped"]  # the README: counted, not read
    assert on_hub.stats.reading["skipped_files_.md"] == 1
    # every request for file bytes is a range request; a JSON Lines file is read block by block,
    # never fetched whole (a Parquet file this small is: its footer read spans it)
    assert ranges and all("range" in {k.lower() for k in r["headers"]} for r in ranges)
    jsonl = [r for r in ranges if r["path"].endswith("en.jsonl")]
    whole = (files / "en.jsonl").stat().st_size
    spans = [_span(r) for r in jsonl]
    assert len(jsonl) > 3 and max(spans) < whole / 2, (spans, whole)
    assert on_hub.stats.reading["bytes_read"] == local.stats.reading["bytes_read"]


def _span(request: dict) -> int:
    wanted = next(v for k, v in request["headers"].items() if k.lower() == "range")
    first, _, last = wanted.removeprefix("bytes=").partition("-")
    return int(last) + 1 - int(first)


def test_a_hub_dataset_is_pinned_to_its_commit_and_an_update_stops_the_resume(
    minilm_path, tmp_path, monkeypatch
):
    """``--corpus ORG/NAME``: the commit the Hub serves is asked once, recorded in run.json and
    loaded; the same name at another commit before a resume stops it, naming both commits."""
    import datasets
    import huggingface_hub.constants

    from pipeline.run.folder import RunStateError

    from .hub_server import LoopbackHub

    (tmp_path / "hub" / "team" / "corpus" / "main").mkdir(parents=True)
    rows = [json.loads(line) for line in sample_corpus_path("en").read_text().splitlines() if line.strip()]
    loaded = []

    def load_dataset(name, split=None, revision=None):  # the download: the bytes are not what is tested
        loaded.append((name, split, revision))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)

    from pipeline.executors import workbench

    # the fake engine has no tokenizer: asking the stand-in Hub for one costs 46 s of retries
    monkeypatch.setattr(workbench, "token_counter", lambda model, local_only=False: lambda t: len(t) // 4)
    sets = [
        f"models.embedder={minilm_path}",
        "generation.tasks=[retrieval]",
        "limit=4",
        "corpus.path=team/corpus",
    ]
    out = f"output.out_dir={tmp_path / 'run'}"
    with LoopbackHub(tmp_path / "hub", "hf_unused") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        hub.shas["team/corpus"] = "a" * 40
        run_fake(out, *sets, "output.shard_rows=2")
        run = json.loads((tmp_path / "run" / "run.json").read_text())
        assert run["corpus"]["files"] == [{"source": "team/corpus", "split": "train", "revision": "a" * 40}]
        assert loaded and {revision for _, _, revision in loaded} == {"a" * 40}
        hub.shas["team/corpus"] = "b" * 40  # an upstream update before the resume
        with pytest.raises(
            RunStateError, match=r"team/corpus changed since the run started \(commit a+ -> b+"
        ):
            run_fake(out, *sets, "output.shard_rows=2")
