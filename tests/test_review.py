"""Reviewing a run: the stratified sample, the label store, the page in a browser, the HTTP
surface, and calibration from labels.

One finished run (fake engine, MiniLM, retrieval, a cosine cut that drops about half the rows)
is made once for the module; one `synth review` server runs over it as a real subprocess.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema as S

from .conftest import child_env, run_fake
from .test_handover import chromium_path

SAMPLE = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory, minilm_path):
    out = tmp_path_factory.mktemp("review") / "run"
    run_fake(
        f"output.out_dir={out}",
        "limit=40",
        "output.shard_rows=8",
        f"models.embedder={minilm_path}",
        "generation.tasks=[retrieval]",
        "filters.cosine.threshold=0.55",
        "models.embedding_store=false",
    )
    return out


class ReviewServer:
    """`synth review RUN --port 0` as a child process; the port is read from what it prints."""

    def __init__(self, out: Path, *args: str):
        command = [sys.executable, "-m", "pipeline.cli", "review", str(out), "--port", "0", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith("open http://"):
                address = line.split()[1]
                self.url, _, self.token = address.partition("/?token=")
                self.url = self.url.rstrip("/")
                self.port = int(self.url.rsplit(":", 1)[1])
                self.host = self.url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
                return
        self.process.kill()
        raise RuntimeError("synth review did not start: " + "".join(self.lines))

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, str]:
        """One raw request: the path is sent exactly as given (no client-side normalising)."""
        host = self.host if ":" in self.host else "127.0.0.1"
        connection = http.client.HTTPConnection(host, self.port, timeout=30)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers={**sent, **(headers or {})})
        reply = connection.getresponse()
        text = reply.read().decode("utf-8", "replace")
        connection.close()
        return reply.status, text

    def progress(self) -> dict:
        status, text = self.request("GET", "/api/progress")
        assert status == 200
        return json.loads(text)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, "".join(self.lines) + rest
        return "".join(self.lines) + rest


@pytest.fixture(scope="module")
def server(run):
    started = ReviewServer(run, "--sample", str(SAMPLE), "--reviewer", "tester")
    yield started
    if started.process.poll() is None:
        started.stop()


def label_files(run: Path) -> list[Path]:
    return sorted((run / "review").glob("labels-*.parquet"))


def stored(run: Path) -> dict[str, dict]:
    from pipeline.review.labels import LabelStore, latest

    return latest(LabelStore(run).records())


# -- the sample ------------------------------------------------------------------------------------


def test_allocation_gives_every_stratum_a_row_then_shares_by_size():
    from pipeline.review.sample import allocate

    assert allocate({"a": 70, "b": 20, "c": 10}, 10) == {"a": 7, "b": 2, "c": 1}
    assert allocate({"a": 80, "b": 15, "c": 4, "d": 1}, 10) == {"a": 7, "b": 1, "c": 1, "d": 1}
    assert allocate({"a": 80, "b": 15, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}  # fewer slots than strata
    assert allocate({"a": 3, "b": 1}, 10) == {"a": 3, "b": 1}  # more slots than rows: every row


def test_sample_covers_kept_and_dropped_strata_and_repeats_with_its_seed(run):
    from pipeline.review.sample import draw_sample, stratum_of

    sample = draw_sample(run, SAMPLE, seed=0)
    assert len(sample) == SAMPLE and len({r.row_id for r in sample}) == SAMPLE
    assert draw_sample(run, SAMPLE, seed=0) == sample
    assert [r.row_id for r in draw_sample(run, SAMPLE, seed=1)] != [r.row_id for r in sample]
    # the strata and their sizes are the run's own
    kept = pq.read_table(run / "data").to_pylist()
    dropped = pq.read_table(run / "rejected").to_pylist()
    sizes = Counter(stratum_of(r, "kept") for r in kept)
    sizes.update(stratum_of(r, f"dropped {r[S.STAGE]}/{r[S.REASON]}") for r in dropped)
    assert {r.stratum: r.stratum_rows for r in sample}.items() <= sizes.items()
    drawn = Counter(r.stratum for r in sample)
    if len(sizes) <= SAMPLE:  # every stratum at least once
        assert set(drawn) == set(sizes)
    assert any(r.kept for r in sample) and any(not r.kept for r in sample)


def test_dropped_rows_keep_persona_and_configuration_for_review(run):
    dropped = pq.read_table(run / "rejected").to_pylist()
    cosine = [r for r in dropped if r[S.STAGE] == "cosine"]
    assert cosine, "the fixture's cut should drop rows at the cosine filter"
    assert all(r[S.PERSONA] and r[S.QUESTION_TYPE] and r[S.DIFFICULTY] for r in cosine)
    assert all(r[S.PASSAGE_LANGUAGE] == "en" and json.loads(r[S.SCORES])["cosine"] < 0.55 for r in cosine)


# -- the HTTP surface -------------------------------------------------------------------------------

TRAVERSALS = [
    "/../config.yaml",
    "/static/../../config.yaml",
    "/static/..%2F..%2Fconfig.yaml",
    "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/%252e%252e%252fconfig.yaml",
    "//etc/passwd",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/etc/passwd",
    "/config.yaml",
    "/stats.json",
    "/review/",
    "/data/retrieval/",
    "/static/server.py",
    "/static/../server.py",
    "/row/..%2F..%2Fconfig.yaml",
    "/row/-1",
]


def test_paths_outside_the_page_are_refused(server, run):
    secret = (run / "config.yaml").read_text(encoding="utf-8").splitlines()[0]
    for path in TRAVERSALS:
        status, text = server.request("GET", path)
        assert status in (400, 404), (path, status)
        assert secret not in text and "root:x:" not in text and "def build_app" not in text, path
    status, text = server.request("GET", "/static/review.js")
    assert status == 200 and "decision_id" in text
    # another host name (a rebound DNS name pointing here) is refused
    status, _ = server.request("GET", "/row/0", headers={"Host": "attacker.example:80"})
    assert status == 400


def test_the_page_serves_on_ipv6_loopback(run):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        started = ReviewServer(run, "--sample", "4", "--reviewer", "tester", "--host", "::1")
    except RuntimeError as exc:
        if "Cannot assign requested address" in str(exc) or "cannot listen" in str(exc):
            pytest.skip("no IPv6 loopback here")
        raise
    try:
        assert started.url.startswith("http://[::1]:") and not started.token
        assert started.request("GET", "/api/progress")[0] == 200
        status, _ = started.request("GET", "/row/0", headers={"Host": "attacker.example"})
        assert status == 400
    finally:
        started.stop()


def test_off_loopback_every_request_needs_the_printed_token(run):
    started = ReviewServer(run, "--sample", "4", "--reviewer", "tester", "--host", "0.0.0.0")
    try:
        token = started.token
        assert token and len(token) >= 24
        assert started.request("GET", "/api/progress")[0] == 403
        assert started.request("GET", "/row/0")[0] == 403
        assert started.request("GET", "/?token=wrong" + token[5:])[0] == 403
        status, _ = started.request("POST", "/api/labels", {"row_id": "x"})
        assert status == 403  # no write without the token either
        # the printed address: a cookie, then the page without the token in its address
        connection = http.client.HTTPConnection("127.0.0.1", started.port, timeout=30)
        connection.request("GET", f"/row/0?token={token}")
        reply = connection.getresponse()
        reply.read()
        cookie = reply.getheader("Set-Cookie")
        assert reply.status == 303 and reply.getheader("Location") == "/row/0"
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        connection.close()
        jar = cookie.split(";")[0]
        assert started.request("GET", "/api/progress", headers={"Cookie": jar})[0] == 200
        # the Host check still holds: a rebound DNS name with a stolen cookie is still refused
        status, _ = started.request(
            "GET", "/api/progress", headers={"Cookie": jar, "Host": "attacker.example"}
        )
        assert status == 400
    finally:
        started.stop()


def test_malformed_label_posts_get_4xx_and_write_nothing(server, run):
    from pipeline.review.sample import draw_sample

    row_id = draw_sample(run, SAMPLE, seed=0)[0].row_id
    before = label_files(run)
    good = {"decision_id": uuid.uuid4().hex, "row_id": row_id, "verdict": "good"}
    cases = [
        (b"{not json", None, 400),
        (b"\xff\xfe", None, 400),
        (json.dumps(good).encode(), {"Content-Type": "text/plain"}, 415),
        (json.dumps(good).encode(), {"Origin": "http://attacker.example"}, 403),
        (b"[1, 2]", None, 422),
        ({**good, "verdict": "great"}, None, 422),
        ({**good, "row_id": "not-in-the-sample"}, None, 422),
        ({**good, "false_negatives": [99]}, None, 422),
        ({**good, "false_negatives": ["1"]}, None, 422),
        ({**good, "decision_id": "../../x"}, None, 422),
        ({**good, "note": "x" * 3000}, None, 422),
        ({**good, "extra": 1}, None, 422),
        (b"{" + b" " * 20_000 + b"}", None, 413),
        (b"[" * 4000 + b"]" * 4000, None, 400),  # nested past the parser's depth, under the size limit
        (b"{" * 3000, None, 400),
        (b'{"decision_id": ' * 1000, None, 400),
        ({**good, "row_id": ["x"]}, None, 422),
        ({**good, "row_id": {"a": 1}}, None, 422),
        ({**good, "decision_id": None}, None, 422),
        ({**good, "note": {"x": [1]}}, None, 422),
        ({**good, "false_negatives": {"1": 1}}, None, 422),
        (b"null", None, 422),
        (b'"just a string"', None, 422),
        (b"1e999999", None, 422),
    ]
    for body, headers, expected in cases:
        status, text = server.request("POST", "/api/labels", body, headers)
        assert status == expected, (body[:40] if isinstance(body, bytes) else body, status, text)
        assert "error" in json.loads(text)
    assert server.request("GET", "/api/labels")[0] == 405
    assert label_files(run) == before  # nothing was written


# -- the page in a real browser --------------------------------------------------------------------


@pytest.mark.skipif(
    chromium_path() is None, reason="no chromium: `make setup` installs Debian's where apt can"
)
def test_labelling_by_keyboard_in_chromium_survives_reload_and_two_tabs(server, run, tmp_path):
    from playwright.sync_api import sync_playwright

    from pipeline.review.sample import RowReader, draw_sample

    sample = draw_sample(run, SAMPLE, seed=0)
    reader = RowReader(run)
    with_negatives = [i for i, ref in enumerate(sample) if len(reader.row(ref)["negatives"]) >= 2]
    assert with_negatives, "the fixture should keep rows with two or more negatives"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=[*flags, "--no-first-run"])
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        page.goto(server.url + "/")
        assert page.url.endswith("/row/0")
        # the first ten rows: a verdict key each; on the first row with negatives, negative 2 marked
        keys = ["g", "q", "p", "s", "g", "g", "q", "g", "p", "g"]
        marked_at = None
        for key in keys:
            position = int(page.url.rsplit("/", 1)[1])
            shown = page.inner_text("#query")
            assert shown.strip(), position
            if marked_at is None and position in with_negatives:
                page.keyboard.press("2")
                assert "answers" in (page.get_attribute("#negatives li[data-index='1']", "class") or "")
                marked_at = position
            if position == 0:
                page.keyboard.press("n")
                page.keyboard.type("first row, checked by hand")
                page.keyboard.press("Escape")
            with page.expect_navigation():
                page.keyboard.press(key)
        assert server.progress()["labelled"] == 10
        labels = stored(run)
        assert len(labels) == 10 and all(r[S.REVIEWER] == "tester" for r in labels.values())
        first = labels[sample[0].row_id]
        assert first[S.VERDICT] == "good" and first[S.NOTE] == "first row, checked by hand"
        if marked_at is not None:
            assert labels[sample[marked_at].row_id][S.FALSE_NEGATIVES] == [1]
        # reload: the saved decisions are on the page
        page.goto(f"{server.url}/row/0")
        page.reload()
        assert "saved: good pair" in page.inner_text("#saved")
        if marked_at is not None:
            page.goto(f"{server.url}/row/{marked_at}")
            assert "negatives answering: 2" in page.inner_text("#saved")
            assert "answers" in (page.get_attribute("#negatives li[data-index='1']", "class") or "")
        # two tabs on two different rows, both keys pressed before either page moves on
        left, right = context.new_page(), context.new_page()
        left.goto(f"{server.url}/row/12")
        right.goto(f"{server.url}/row/13")
        left.keyboard.press("q")
        right.keyboard.press("g")
        left.wait_for_url(lambda url: not url.endswith("/row/12"))
        right.wait_for_url(lambda url: not url.endswith("/row/13"))
        # a screenshot of a row, and the query's own pixels are text (they change without it)
        page.goto(f"{server.url}/row/5")
        query = reader.row(sample[5])["query"]
        assert page.inner_text("#query").strip() == query.strip()
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        with_text = page.locator("#query").screenshot()
        page.evaluate("document.getElementById('query').style.color = 'transparent'")
        without_text = page.locator("#query").screenshot()
        browser.close()
    assert with_text != without_text
    assert (tmp_path / "review.png").stat().st_size > 20_000
    labels = stored(run)
    assert labels[sample[12].row_id][S.VERDICT] == "bad_query"
    assert labels[sample[13].row_id][S.VERDICT] == "good"
    assert server.progress()["labelled"] == 12
    local = f"http://127.0.0.1:{server.port}/"
    assert requests and all(url.startswith((local, "data:")) for url in requests), set(requests)


def test_a_resent_decision_counts_once(server, run):
    from pipeline.review.sample import draw_sample

    row_id = draw_sample(run, SAMPLE, seed=0)[20].row_id
    decision = {"decision_id": uuid.uuid4().hex, "row_id": row_id, "verdict": "not_answered"}
    before = server.progress()["labelled"]
    for _ in range(3):
        status, text = server.request("POST", "/api/labels", decision)
        assert status == 201, text
    assert server.progress()["labelled"] == before + 1
    records = [r for r in stored_records(run) if r[S.ROW_ID] == row_id]
    assert len(records) == 1


def stored_records(run: Path) -> list[dict]:
    from pipeline.review.labels import LabelStore

    return LabelStore(run).records()


def test_a_restarted_review_continues_with_every_label(server, run):
    before = server.progress()
    labels_before = stored(run)
    assert before["labelled"] > 0
    server.stop()
    again = ReviewServer(run, "--sample", str(SAMPLE), "--reviewer", "tester")
    try:
        assert again.progress() == before
        assert f"{before['labelled']} labelled so far" in "".join(again.lines)
        assert len(label_files(run)) == 1  # merged into one file when the review started
        assert stored(run) == labels_before
        status, _ = again.request("GET", "/")
        assert status == 303
        connection = http.client.HTTPConnection("127.0.0.1", again.port, timeout=30)
        connection.request("GET", "/")
        location = connection.getresponse().getheader("location")
        connection.close()
        position = int(location.rsplit("/", 1)[1])
        from pipeline.review.sample import draw_sample

        assert draw_sample(run, SAMPLE, seed=0)[position].row_id not in labels_before
    finally:
        again.stop()


# -- calibration -----------------------------------------------------------------------------------

ORDER = ["personas", "configure", "query", "language", "dedup", "cosine", "margin", "judge"]
CONFIG = {"filters": {"cosine": {"threshold": 0.55}, "judge": {"min_positive_score": 2}}}
CONFIG["negatives"] = {"relative_margin": 0.05}


def _record(row_id, stratum, rows, verdict, kept, stage=None, cosine=None, judge=None, negatives=(), fn=()):
    return {
        S.DECISION_ID: uuid.uuid4().hex,
        S.ROW_ID: row_id,
        S.KEPT: kept,
        S.VERDICT: verdict,
        S.FALSE_NEGATIVES: list(fn),
        S.NOTE: None,
        S.REVIEWER: "hand",
        S.TIME: datetime.datetime.now(datetime.timezone.utc),
        S.STRATUM: stratum,
        S.STRATUM_ROWS: rows,
        S.TASK_TYPE: "retrieval",
        S.STAGE: stage,
        S.REASON: None if kept else "some_reason",
        S.POSITIVE_SCORE: cosine if kept else None,
        S.JUDGE_SCORE: judge,
        S.NEGATIVE_SCORES: [s for s, _ in negatives],
        S.NEGATIVE_SOURCES: [src for _, src in negatives],
        S.SCORES: json.dumps({"cosine": cosine}) if (not kept and cosine is not None) else None,
    }


def hand_labels() -> list[dict]:
    """Four strata: 60 kept rows (6 labels, one skip more), 20 dropped at cosine (4), 10 dropped by
    the language check (2), 10 dropped at the query (1). Weights: 10, 5, 5, 10."""
    kept, cos, lang, query = "kept", "dropped cosine", "dropped language", "dropped query"
    return [
        _record(
            "a1",
            kept,
            60,
            "good",
            True,
            cosine=0.90,
            judge=3,
            negatives=[(0.2, "mined"), (0.8, "llm")],
            fn=[1],
        ),
        _record("a2", kept, 60, "good", True, cosine=0.85, judge=3, negatives=[(0.3, "mined")]),
        _record("a3", kept, 60, "good", True, cosine=0.80, judge=2),
        _record("a4", kept, 60, "bad_query", True, cosine=0.75, judge=2),
        _record("a5", kept, 60, "good", True, cosine=0.72, judge=3),
        _record("a6", kept, 60, "not_answered", True, cosine=0.71, judge=2),
        _record("a7", kept, 60, "skip", True, cosine=0.60, judge=1),
        _record("b1", cos, 20, "good", False, stage="cosine", cosine=0.65),
        _record("b2", cos, 20, "bad_query", False, stage="cosine", cosine=0.60),
        _record("b3", cos, 20, "not_answered", False, stage="cosine", cosine=0.50),
        _record("b4", cos, 20, "bad_query", False, stage="cosine", cosine=0.40),
        _record("c1", lang, 10, "good", False, stage="language"),
        _record("c2", lang, 10, "bad_query", False, stage="language"),
        _record("d1", query, 10, "bad_query", False, stage="query"),
    ]


def write_label_file(path: Path, records: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(records, schema=S.REVIEW_SCHEMA), path)
    return path


def hand_wilson(p: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval, written out again from its formula."""
    a = p + z**2 / (2 * n)
    b = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return (a - b) / (1 + z**2 / n), (a + b) / (1 + z**2 / n)


def close(found: dict, value: float, n_effective: float) -> None:
    low, high = hand_wilson(value, n_effective)
    assert found["value"] == pytest.approx(value, abs=1e-6)
    assert (found["low"], found["high"]) == (
        pytest.approx(max(0, low), abs=1e-6),
        pytest.approx(min(1, high), abs=1e-6),
    )


def test_calibration_equals_a_hand_computation(tmp_path):
    from pipeline.review.calibrate import calibrate
    from pipeline.review.labels import load_labels

    records = load_labels(write_label_file(tmp_path / "labels.parquet", hand_labels()))
    result = calibrate(records, ORDER, CONFIG, target=0.9)
    assert result["labels"] == 13 and result["skipped"] == 1
    close(result["kept_precision"], 4 / 6, 6)
    filters = {f["filter"]: f for f in result["filters"]}
    assert list(filters) == ["language", "dedup", "cosine", "judge"]
    # language: reached by kept, cosine-dropped and language-dropped rows; passed the first two
    assert (filters["language"]["reached"], filters["language"]["dropped"]) == (12, 2)
    close(filters["language"]["precision"], (4 * 10 + 5) / (6 * 10 + 4 * 5), (80**2) / (6 * 100 + 4 * 25))
    close(filters["language"]["recall"], 45 / 50, 50**2 / (4 * 100 + 2 * 25))
    close(filters["language"]["bad_among_dropped"], 1 / 2, 2)
    # cosine: reached by kept and cosine-dropped rows
    assert (filters["cosine"]["reached"], filters["cosine"]["dropped"]) == (10, 4)
    close(filters["cosine"]["precision"], 4 / 6, 6)
    close(filters["cosine"]["recall"], 40 / 45, 45**2 / (4 * 100 + 25))
    close(filters["cosine"]["bad_among_dropped"], 3 / 4, 4)
    assert filters["dedup"]["bad_among_dropped"] is None
    close(filters["judge"]["precision"], 4 / 6, 6)
    # thresholds at 90% precision: cosine > 0.75 keeps a1-a3 (all good); judge >= 3 keeps a1, a2, a5
    cuts = {t["setting"]: t for t in result["thresholds"]}
    assert cuts["filters.cosine.threshold"]["suggested"] == 0.75
    close(cuts["filters.cosine.threshold"]["precision"], 1.0, 3)
    close(cuts["filters.cosine.threshold"]["recall"], 30 / 45, 45**2 / (4 * 100 + 25))
    assert cuts["filters.judge.min_positive_score"]["suggested"] == 3
    close(cuts["filters.judge.min_positive_score"]["recall"], 3 / 4, 4)
    # at 80%: cosine > 0.71 keeps a1-a5 (4 good of 5)
    at_80 = {t["setting"]: t for t in calibrate(records, ORDER, CONFIG, target=0.8)["thresholds"]}
    assert at_80["filters.cosine.threshold"]["suggested"] == 0.71
    # negatives: a1's LLM negative (margin 1 - 0.8 / 0.9 = 0.111) answers; the two mined ones do not
    negatives = result["negatives"]
    assert negatives["labels"] == 3
    close(negatives["false_negatives"], 1 / 3, 3)
    close(negatives["by_source"]["llm"], 1.0, 1)
    close(negatives["by_source"]["mined"], 0.0, 2)
    bands = {(b["from"], b["to"]): b["false_negatives"] for b in negatives["by_margin"]}
    assert bands == {(0.1, 0.2): 1, (0.5, 1.0): 0}
    assert negatives["margin"]["suggested"] == 0.12 and negatives["margin"]["negatives_removed"] == 1


def test_suggested_settings_feed_regate_and_a_new_run(tmp_path):
    import yaml

    from pipeline.cli.options import settings_file
    from pipeline.config import load_config
    from pipeline.review.calibrate import calibrate, suggested_settings

    result = calibrate(hand_labels(), ORDER, CONFIG, target=0.9)
    settings = suggested_settings(result)
    assert settings == {
        "filters": {"cosine": {"mode": "absolute", "threshold": 0.75}, "judge": {"min_positive_score": 3}},
        "negatives": {"relative_margin": 0.12},
    }
    path = tmp_path / "suggested.yaml"
    path.write_text(yaml.safe_dump(settings))
    regated = load_config(None, settings_file(str(path)))  # what `synth regate --config` applies
    assert regated.filters.cosine.threshold == 0.75 and regated.filters.judge.min_positive_score == 3
    assert regated.negatives.relative_margin == 0.12
    assert load_config(str(path)).filters.cosine.threshold == 0.75  # `synth generate --config` reads it too


def test_calibrate_without_labels_says_so_in_one_line(run, tmp_path):
    import shutil

    copy = tmp_path / "unreviewed"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review"))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "calibrate", str(copy)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no labels" in lines[0] and "synth review" in lines[0], done.stderr
    assert time.monotonic() - started < 30


def test_calibrate_on_the_reviewed_run_writes_json_config_card_and_report(run, tmp_path):
    from pipeline.handover.report import build_report
    from pipeline.review.server import Review

    if not stored(run):  # run alone: label a few rows the way the page does
        review = Review(run, SAMPLE, 0, "tester")
        for position, verdict in enumerate(["good", "bad_query", "good", "not_answered", "good", "good"]):
            row_id = review.sample[position].row_id
            review.save({"decision_id": uuid.uuid4().hex, "row_id": row_id, "verdict": verdict})
    settings, figures = tmp_path / "suggested.yaml", tmp_path / "calibration.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "calibrate",
            str(run),
            "--precision",
            "0.8",
            "--json",
            str(figures),
            "--write-config",
            str(settings),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "precision of the kept rows" in done.stdout and "cosine" in done.stdout
    result = json.loads(figures.read_text())
    labelled = [r for r in stored(run).values() if r[S.VERDICT] != "skip"]
    assert result["labels"] == len(labelled)
    assert settings.read_text().startswith("# settings suggested by `synth calibrate")
    card = (run / "README.md").read_text(encoding="utf-8")
    assert "### Human review" in card and f"{len(labelled)} sampled rows were reviewed" in card
    page = build_report(run)
    assert "id='review'" in page and "Review: filters.cosine.threshold" in page


def test_calibration_reads_the_cut_the_run_used_when_the_config_left_it_unset(run, tmp_path):
    import shutil

    import yaml

    from pipeline.review.calibrate import run_settings

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["filters"]["cosine"]["threshold"] = None
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["models"]["embedder"]["cosine_threshold"] == 0.7  # MiniLM's calibrated cut
    order, settings = run_settings(copy)
    assert settings["filters"]["cosine"]["threshold"] == 0.7 and "cosine" in order
