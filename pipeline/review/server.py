"""``synth review``: a page on 127.0.0.1 for judging sampled rows of a run with the keyboard.

Starlette serves server-rendered pages (Jinja2 templates in ``templates/``) and two files of
its own (``static/``); nothing is loaded from anywhere else. The routes are fixed: a page per
sample position, the progress, and one JSON endpoint that saves a decision. There is no route
that opens a path from the request, so a request for any other file (``../``, absolute or
encoded paths) finds no route and is refused. The server reads the run's shards and writes
only its labels (``pipeline/review/labels.py``). Requests must name this server as their
host (so another site cannot reach it through a rebound DNS name), and a label post must be
JSON from this page's own origin.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .. import schema as S
from .labels import LabelError, LabelStore, check_decision, latest
from .sample import RowReader, draw_sample

HERE = Path(__file__).parent
STATIC = {  # the only files the server sends: its own script and styles, read once
    "review.js": ("text/javascript", (HERE / "static" / "review.js").read_bytes()),
    "review.css": ("text/css", (HERE / "static" / "review.css").read_bytes()),
}
MAX_BODY = 16_384
KEYS = {"good": "g", "bad_query": "q", "not_answered": "p", "skip": "s"}
# the page's own policy: scripts, styles and requests only from this server
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Review:
    """One review of a run: its sample, the rows behind it and the labels saved so far."""

    def __init__(self, out: str | Path, size: int, seed: int, reviewer: str):
        self.out = out
        self.reviewer = reviewer
        self.sample = draw_sample(out, size, seed)
        self.positions = {ref.row_id: i for i, ref in enumerate(self.sample)}
        self.reader = RowReader(out)
        self.store = LabelStore(out)
        self.merged = self.store.compact()
        self.labels = latest(self.store.records())
        self._lock = threading.Lock()

    def row(self, position: int) -> dict:
        with self._lock:  # the reader's shard cache is shared by the server's threads
            return self.reader.row(self.sample[position])

    def label_of(self, position: int) -> dict | None:
        return self.labels.get(self.sample[position].row_id)

    def next_open(self, after: int = -1) -> int | None:
        """The first position after ``after`` (then from the start) with no label yet."""
        count = len(self.sample)
        for step in range(1, count + 1):
            position = (after + step) % count
            if self.sample[position].row_id not in self.labels:
                return position
        return None

    def save(self, body: object) -> dict:
        row_id = body.get("row_id") if isinstance(body, dict) else None
        position = self.positions.get(row_id) if isinstance(row_id, str) else None
        row = self.row(position) if position is not None else None
        decision = check_decision(body, row, self.reviewer)
        with self._lock:
            known = self.labels.get(decision.row["row_id"])
            if known is None or known[S.DECISION_ID] != decision.decision_id:  # a resend counts once
                self.store.save(decision)
                self.labels[decision.row["row_id"]] = decision.record()
        return {"saved": decision.decision_id, "next": self.next_open(position), "progress": self.progress()}

    def progress(self) -> dict:
        labelled = [self.labels[r.row_id] for r in self.sample if r.row_id in self.labels]
        verdicts = {v: sum(1 for r in labelled if r[S.VERDICT] == v) for v in S.VERDICTS}
        return {
            "sample": len(self.sample),
            "labelled": len(labelled),
            "verdicts": verdicts,
            "false_negatives": sum(len(r[S.FALSE_NEGATIVES]) for r in labelled),
        }


def build_app(review: Review, host: str) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def page(request: Request, name: str, context: dict, status: int = 200) -> Response:
        context = {"progress": review.progress(), "verdicts": S.VERDICTS, "keys": KEYS, **context}
        context["run"] = str(review.out)
        context["reviewer"] = review.reviewer
        headers = SECURITY_HEADERS
        return templates.TemplateResponse(request, name, context, status_code=status, headers=headers)

    async def home(request: Request) -> Response:
        position = review.next_open()
        return RedirectResponse("/done" if position is None else f"/row/{position}", status_code=303)

    async def row_page(request: Request) -> Response:
        position = request.path_params["position"]
        if not 0 <= position < len(review.sample):
            return page(request, "missing.html", {"position": position}, status=404)
        row = review.row(position)
        saved = review.label_of(position)
        state = {
            "position": position,
            "row_id": row["row_id"],
            "negatives": len(row["negatives"]),
            "previous": position - 1 if position > 0 else None,
            "next": position + 1 if position + 1 < len(review.sample) else None,
            "saved": None
            if saved is None
            else {"verdict": saved[S.VERDICT], "false_negatives": saved[S.FALSE_NEGATIVES]},
        }
        marks = ", ".join(str(i + 1) for i in saved[S.FALSE_NEGATIVES]) if saved else ""
        context = {"row": row, "position": position, "saved": saved, "saved_marks": marks, "state": state}
        return page(request, "row.html", context)

    async def done(request: Request) -> Response:
        return page(request, "done.html", {})

    async def progress(request: Request) -> Response:
        return JSONResponse(review.progress(), headers=SECURITY_HEADERS)

    async def save(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{request.headers.get('host')}":
            return JSONResponse({"error": "labels are taken from this page only"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the decision as application/json"}, status_code=415)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"a decision is at most {MAX_BODY} bytes"}, status_code=413)
        try:
            decision = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            saved = review.save(decision)
        except LabelError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(saved, status_code=201, headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        found = STATIC.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        media_type, data = found
        return Response(data, media_type=media_type, headers=SECURITY_HEADERS)

    hosts = sorted({"127.0.0.1", "localhost", host})
    routes = [
        Route("/", home),
        Route("/row/{position:int}", row_page),
        Route("/done", done),
        Route("/api/progress", progress),
        Route("/api/labels", save, methods=["POST"]),
        Route("/static/{name}", static),
    ]
    wildcard = host in ("0.0.0.0", "::")  # bound to every address: the user chose to be reachable
    middleware = [] if wildcard else [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(routes=routes, middleware=middleware)
