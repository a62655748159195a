"""Hand-over of a finished run: the dataset card, the trainer exports, the report and Hub publishing.

One finished run (fake engine, MiniLM, retrieval + bitext + STS in English and Chinese)
is made once per module and read by every test.
"""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schema as S

from .conftest import run_fake


@pytest.fixture(scope="module")
def run(tmp_path_factory, minilm_path):
    out = tmp_path_factory.mktemp("handover") / "run"
    run_fake(
        f"output.out_dir={out}",
        "limit=12",
        "output.shard_rows=4",
        f"models.embedder={minilm_path}",
        "filters.cosine.mode=percentile",
        "generation.tasks=[retrieval, bitext, sts]",
        "generation.languages=[en, zh]",
        "filters.cosine.unscored=keep",
        "output.license=cc-by-4.0",
    )
    return out


def rows_of(out, task=None):
    rows = pq.read_table(out / "data").to_pylist()
    return [r for r in rows if task is None or r[S.TASK_TYPE] == task]


def card_header(out):
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_card_front_matter_names_every_shard_and_loads_by_config(run):
    from datasets import load_dataset

    header, text = card_header(run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert header["license"] == "cc-by-4.0"
    assert set(header["language"]) == {"en", "zh"}
    assert set(header["task_categories"]) == {"text-retrieval", "translation", "sentence-similarity"}
    assert header["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]}
    assert set(configs) == {"retrieval", "bitext", "sts"}
    # every shard of the manifest is matched by exactly one config's pattern
    import fnmatch

    for shard in manifest["shards"]:
        assert sum(fnmatch.fnmatch(shard["path"], pattern) for pattern in configs.values()) == 1
    for task in configs:
        loaded = load_dataset(str(run), task, split="train")
        assert len(loaded) == len(rows_of(run, task)) > 0
        assert set(loaded[S.TASK_TYPE]) == {task}
    # the body: demo models said first, how it was made, the funnel's numbers, the command
    body = text.split("---\n", 2)[2]
    assert "packaged demo models" in body.split("##")[0]
    stats = json.loads((run / "stats.json").read_text())
    assert f"{stats['rows_out']} rows kept of {stats['rows_in']}" in body
    for name, stage in stats["stages"].items():
        assert f"| {name} | {stage['in']} | {stage['out']} |" in body
    assert manifest["prompts"]["retrieval/query"] in body and "Seed: " in body and "Command: `" in body


@pytest.mark.parametrize("fmt", ["sentence-transformers", "flagembedding", "swift"])
def test_each_export_keeps_every_row_with_its_instruction_and_task_type(run, tmp_path, fmt):
    from typer.testing import CliRunner

    from pipeline.cli import app

    dest = tmp_path / fmt
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt, "--out", str(dest)])
    assert result.exit_code == 0, result.output
    total = 0
    for task in ("retrieval", "bitext", "sts"):
        source = sorted(rows_of(run, task), key=lambda r: r[S.ID])
        if fmt == "sentence-transformers":
            table = pq.read_table(dest / f"{task}.parquet")
            rows = table.to_pylist()
            if task == "sts":
                assert table.column_names == ["sentence1", "sentence2", "score"]
                assert all(0 <= r["score"] <= 1 for r in rows)
            else:
                n = min(len(r[S.NEGATIVES]) for r in source)
                assert table.column_names == ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(n)]
                assert all(r["anchor"].startswith("Instruct: ") and "\nQuery:" in r["anchor"] for r in rows)
                assert {r["positive"] for r in rows} == {r[S.POSITIVE] for r in source}
        else:
            lines = (dest / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines]
            if fmt == "flagembedding":  # FlagEmbedding's documented fields; pos and neg always lists
                for r in rows:
                    assert {"query", "pos", "neg", "prompt"} <= set(r) and r["task_type"] == task
                    assert isinstance(r["pos"], list) and isinstance(r["neg"], list) and r["prompt"]
                assert {r["query"] for r in rows} == {r[S.QUERY] for r in source}
            else:  # ms-swift's embedding rows
                for r in rows:
                    assert {"query", "response", "rejected_response"} <= set(r) and r["task_type"] == task
                    assert isinstance(r["rejected_response"], list)
                    assert r["query"].startswith("Instruct: ")
                    assert ("label" in r) == (task == "sts")
        assert len(rows) == len(source)
        total += len(rows)
    assert total == json.loads((run / "manifest.json").read_text())["rows"]


def test_sentence_transformers_export_trains_two_steps(run, tmp_path, minilm_path):
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from pipeline.handover.export import export

    dest = tmp_path / "st"
    export(run, "sentence-transformers", dest)
    dataset = load_dataset("parquet", data_files=str(dest / "retrieval.parquet"), split="train")
    model = SentenceTransformer(minilm_path, device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "trained"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )
    before = model.encode(["what the passage says"])
    output = trainer.train()
    assert output.global_step == 2
    assert not (model.encode(["what the passage says"]) == before).all()  # the weights moved


def chromium_path():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium_path() is None, reason="no chromium: `make setup` installs Debian's where apt can"
)
def test_report_renders_in_headless_chromium_with_every_plot(run, tmp_path):
    from playwright.sync_api import sync_playwright
    from typer.testing import CliRunner

    from pipeline.cli import app

    page_file = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(page_file)])
    assert result.exit_code == 0, result.output
    text = page_file.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # nothing to fetch: renders offline
    stats = json.loads((run / "stats.json").read_text())
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=[*flags, "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))"
        )
        funnel = page.inner_text("#funnel")
        summary = page.inner_text("#summary")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(images) >= 8 and all(i["ok"] for i in images), images  # no broken image
    assert {i["alt"] for i in images} >= {"Filter funnel", "Query lengths", "Cosine", "Negatives per row"}
    assert all(url.startswith(("file://", "data:")) for url in requests)
    assert f"{stats['rows_out']} rows kept of {stats['rows_in']}" in summary
    for name, stage in stats["stages"].items():  # the funnel's numbers are on the page
        assert f"{name}\t{stage['in']}\t{stage['out']}" in funnel
    assert (tmp_path / "report.png").stat().st_size > 20_000


TOKEN = "hf_loopbackSecretToken123456"


def test_publish_uploads_one_commit_and_never_shows_the_token(run, tmp_path, monkeypatch, caplog):
    import logging

    from datasets import load_dataset
    from typer.testing import CliRunner

    from pipeline.cli import app

    from .hub_server import LoopbackHub

    caplog.set_level(logging.DEBUG)
    with LoopbackHub(tmp_path / "hub", TOKEN) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        import huggingface_hub.constants

        # the test session is offline for model look-ups; this one test talks to its own server
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        args = ["publish", str(run), "--repo-id", "team/synth-demo", "--private"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        again = CliRunner().invoke(app, [*args, "--revision", "v2", "--include-rejected"])
        assert again.exit_code == 0, again.output
        # with the wrong token the server refuses, and the message says what to check
        sent_with_token = len(hub.requests)
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        refused = CliRunner().invoke(app, args)
    manifest = json.loads((run / "manifest.json").read_text())
    expected = {s["path"] for s in manifest["shards"]} | {"README.md", "stats.json"}
    assert len(hub.commits) == 2  # one commit per publish
    first, second = hub.commits
    assert set(first["files"]) == expected and first["revision"] == "main"
    assert hub.repos["team/synth-demo"]["private"] is True
    rejected = {str(p.relative_to(run)) for p in (run / "rejected").glob("*.parquet")}
    assert rejected and set(second["files"]) == expected | rejected and second["revision"] == "v2"
    for path in expected:  # byte for byte what the run wrote
        assert first["files"][path] == (run / path).read_bytes()
    # the uploaded repo loads by its card's configs
    uploaded = tmp_path / "hub" / "team" / "synth-demo" / "main"
    assert len(load_dataset(str(uploaded), "retrieval", split="train")) == len(rows_of(run, "retrieval"))
    assert refused.exit_code == 2 and "401" in refused.output and "HF_TOKEN" in refused.output
    # the token never appears in what the user or a log sees, nor in the request bodies
    seen = result.output + again.output + refused.output + caplog.text
    seen += "".join(
        p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file() and p.suffix != ".parquet"
    )
    assert TOKEN not in seen
    assert all(TOKEN.encode() not in r["body"] for r in hub.requests)
    assert all(r["authorised"] for r in hub.requests[:sent_with_token])
    assert hub.requests[sent_with_token:] and not any(r["authorised"] for r in hub.requests[sent_with_token:])


def test_publish_and_export_refuse_an_unfinished_run(run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "completions" / "task-00000").unlink()
    for command in (["publish", str(unfinished), "--repo-id", "team/x"], ["export", str(unfinished)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and "not finished" in result.output and "task 0" in result.output
    changed = tmp_path / "changed"
    shutil.copytree(run, changed)
    shard = next((changed / "data" / "retrieval").glob("part-*.parquet"))
    shard.rename(shard.with_name("part-99999-00000.parquet"))
    result = CliRunner().invoke(app, ["publish", str(changed), "--repo-id", "team/x"])
    assert result.exit_code == 2 and "not on disk" in result.output
