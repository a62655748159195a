"""No secret in anything a run writes, prints or publishes: a canary planted in every place a user
can put one, then looked for in every file of the run folder, the cache folder's logs, the
loopback Hub's received files and the captured terminal (pipeline/redaction.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import child_env, generate_args
from .hub_server import LoopbackHub
from .test_openai_engine import FakeServer

MARK = "zQcanary"  # every canary holds it; no file or line of a run may
SECRETS = {
    "HF_TOKEN": f"hf_{MARK}HubToken0123456789",
    "AWS_SECRET_ACCESS_KEY": f"{MARK}AwsSecret/0123456789abcdef",
    "AWS_SESSION_TOKEN": f"{MARK}AwsSession0123456789",
    "MY_GATEWAY_KEY": f"sk-{MARK}GatewayKey0123456789",  # named by --api-key-env
}


def canary_env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {**child_env(), **SECRETS, "SYNTH_CACHE": str(tmp_path / "cache"), **more}
    env.pop("AWS_ENDPOINT_URL", None)  # no S3 server here: a URL with a key is refused before any call
    return env


def leaks(*roots: Path, text: str = "") -> list[str]:
    """Every file under ``roots`` (and the text) that holds the mark: the places a secret leaked to."""
    found = [f"terminal: {line}" for line in text.splitlines() if MARK in line]
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if path.is_file() and MARK.encode() in path.read_bytes():
                found.append(str(path))
    return found


def synth(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


REFUSED = [
    (["--engine", "openai", "--base-url", f"http://user:{MARK}pw@127.0.0.1:9/v1"], "--api-key-env"),
    (["--engine", "openai", "--base-url", f"http://127.0.0.1:9/v1?api-key={MARK}key"], "--api-key-env"),
    (["--corpus", f"s3://AKIDEXAMPLE:{MARK}secret/x@bucket/docs"], "credentials in a URL"),
    (["--corpus", f"https://example.org/docs.jsonl?token={MARK}tok"], "credentials in a URL"),
    (["--out", f"s3://AKIDEXAMPLE:{MARK}secret@bucket/run"], "credentials in a URL"),
    (["--cache", f"s3://AKIDEXAMPLE:{MARK}secret@bucket/replies"], "credentials in a URL"),
]


@pytest.mark.parametrize("flags, advice", REFUSED, ids=[f[0][-2] + str(i) for i, f in enumerate(REFUSED)])
def test_a_secret_in_a_location_is_refused_before_anything_is_written(tmp_path, flags, advice):
    out = tmp_path / "out"
    args = (
        ["generate", "--limit", "2", "--out", str(out), *flags]
        if "--out" not in flags
        else ["generate", *flags]
    )
    done = synth(*args, env=canary_env(tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert advice in line and "***" in line, line
    assert not (out / "config.yaml").exists()
    assert not leaks(tmp_path, text=done.stdout + done.stderr)


def test_the_reply_cache_variable_with_a_secret_is_refused(tmp_path):
    env = canary_env(tmp_path, SYNTH_REPLY_CACHE=f"s3://AKIDEXAMPLE:{MARK}secret@bucket/replies")
    done = synth("generate", "--limit", "2", "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2 and "SYNTH_REPLY_CACHE" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "config.yaml").exists()
    assert not leaks(tmp_path, text=done.stdout + done.stderr)


@pytest.mark.parametrize("command", ["stats", "export", "report", "review", "calibrate", "publish"])
def test_every_command_on_a_url_with_credentials_says_one_line(tmp_path, command):
    url = f"s3://AKIDEXAMPLE:{MARK}secret@bucket/run"
    extra = ["--repo-id", "team/x"] if command == "publish" else []
    done = synth(command, url, *extra, env=canary_env(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
    assert "credentials in a URL" in done.stderr
    assert not leaks(tmp_path, text=done.stdout + done.stderr)


def test_an_unexpected_error_report_holds_no_secret(tmp_path, monkeypatch):
    from pipeline import console

    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        sys, "argv", ["synth", "generate", "--base-url", f"http://u:{MARK}pw@host/v1?key={MARK}"]
    )
    console.stop_logging()
    try:
        raise RuntimeError(f"the store said: bad key {SECRETS['AWS_SECRET_ACCESS_KEY']} for s3://id:{MARK}@b")
    except RuntimeError as exc:
        path = console.crash_report(exc)
    text = path.read_text()
    assert "the store said" in text and "generate" in text
    assert not leaks(tmp_path)


def test_a_run_and_its_hand_over_keep_every_secret_out(tmp_path, minilm_path):
    """A server that repeats the key in its errors, the keys in the environment, --verbose: the run
    folder, the logs, the report, the exports, the published files and the terminal hold none."""
    corpus = tmp_path / "corpus.jsonl"
    lines = [
        {"id": f"d{i}", "text": f"Tides rise and fall twice each day along coast number {i}."}
        for i in range(5)
    ]
    lines.append(
        {"id": "echo", "text": "ECHO-THE-KEY: this passage makes the server repeat the request's key."}
    )
    corpus.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    server = FakeServer()
    server.echo = "ECHO-THE-KEY"
    out, terminal = tmp_path / "out", []
    env = canary_env(tmp_path)
    try:
        flags = [
            "--engine",
            "openai",
            "--base-url",
            server.url,
            "--api-key-env",
            "MY_GATEWAY_KEY",
            "--verbose",
        ]
        args = generate_args(out, minilm_path, limit=6, sets=["filters.cosine.enabled=false"], extra=flags)
        done = synth(*args, "--corpus", str(corpus), env=env)
        terminal.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.auth == {f"Bearer {SECRETS['MY_GATEWAY_KEY']}"}  # the key was sent, and used
        rejected = (out / "rejected").rglob("*.parquet")
        import pyarrow.parquet as pq

        details = [r["detail"] for p in rejected for r in pq.read_table(p).to_pylist() if r["detail"]]
        assert any("the key Bearer ***" in d for d in details), details  # kept, with the key masked
        for command in (["report", str(out)], ["export", str(out)], ["stats", str(out)]):
            done = synth(*command, env=env)
            terminal.append(done.stdout + done.stderr)
            assert done.returncode == 0, done.stderr[-2000:]
        with LoopbackHub(tmp_path / "hub", SECRETS["HF_TOKEN"]) as hub:
            publish_env = {
                **env,
                "HF_ENDPOINT": hub.endpoint,
                "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_XET": "1",
            }
            publish_env.pop("TRANSFORMERS_OFFLINE", None)
            done = synth(
                "publish", str(out), "--repo-id", "team/canary", "--include-rejected", env=publish_env
            )
            terminal.append(done.stdout + done.stderr)
            assert done.returncode == 0, done.stderr[-2000:]
            assert list((tmp_path / "hub").rglob("README.md"))
        # the same server now refuses the key, repeating it: the failing run's one line masks it
        server.refuse_key = True
        failed = synth(*generate_args(tmp_path / "failed", minilm_path, limit=2, extra=flags), env=env)
        terminal.append(failed.stdout + failed.stderr)
        assert failed.returncode == 2 and "refused the key" in failed.stderr, failed.stderr[-2000:]
    finally:
        server.close()
    assert not leaks(tmp_path, text="\n".join(terminal))
