"""``synth review``: a page on 127.0.0.1 for judging sampled rows of a run with the keyboard.

Starlette serves server-rendered pages (Jinja2 templates in ``templates/``) and two files of
its own (``static/``); nothing is loaded from anywhere else. The routes are fixed: a page per
sample position, the progress, and one JSON endpoint that saves a decision. There is no route
that opens a path from the request, so a request for any other file (``../``, absolute or
encoded paths) finds no route and is refused. The server reads the run's shards and writes
only its labels (``pipeline/review/labels.py``). Requests must name this server as their
host (so another site cannot reach it through a rebound DNS name), and a label post must be
JSON from this page's own origin.

Bound to a loopback address (``127.0.0.1``, ``::1``) the page is open to whoever can reach that
address: the user of this machine. Bound to any other address (``0.0.0.0``, a LAN address) it
also asks for a token: printed with the page's address at the start (``/?token=...``, as
notebook servers do), exchanged for a cookie on the first visit, and required of every request
after it; a request without it gets 403.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import threading
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
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


def build_app(review: Review, host: str, token: str | None = None) -> Guard:
    """The page's routes over one review, behind the Host and token guard."""
    pages = Pages(review)
    routes = [
        Route("/", pages.home),
        Route("/row/{position:int}", pages.row),
        Route("/done", pages.done),
        Route("/api/progress", pages.progress),
        Route("/api/labels", pages.save, methods=["POST"]),
        Route("/static/{name}", pages.static),
    ]
    return Guard(Starlette(routes=routes), allowed_hosts(host), token)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Pages:
    """What each route answers for one review."""

    def __init__(self, review: Review):
        self.review = review
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def page(self, request: Request, name: str, context: dict, status: int = 200) -> Response:
        review = self.review
        context = {"progress": review.progress(), "verdicts": S.VERDICTS, "keys": KEYS, **context}
        context["run"] = str(review.out)
        context["reviewer"] = review.reviewer
        return self.templates.TemplateResponse(
            request, name, context, status_code=status, headers=SECURITY_HEADERS
        )

    async def home(self, request: Request) -> Response:
        position = self.review.next_open()
        return RedirectResponse("/done" if position is None else f"/row/{position}", status_code=303)

    async def row(self, request: Request) -> Response:
        review, position = self.review, request.path_params["position"]
        if not 0 <= position < len(review.sample):
            return self.page(request, "missing.html", {"position": position}, status=404)
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
        return self.page(request, "row.html", context)

    async def done(self, request: Request) -> Response:
        return self.page(request, "done.html", {})

    async def progress(self, request: Request) -> Response:
        return JSONResponse(self.review.progress(), headers=SECURITY_HEADERS)

    async def save(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{request.headers.get('host')}":
            return _error("labels are taken from this page only", 403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error("send the decision as application/json", 415)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(f"a decision is at most {MAX_BODY} bytes", 413)
        try:
            decision = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error("the body is not JSON", 400)
        except RecursionError:  # [[[[... under the size limit: deeper than the parser goes
            return _error("the body is nested too deeply", 400)
        try:
            saved = self.review.save(decision)
        except LabelError as exc:
            return _error(str(exc), 422)
        except (TypeError, ValueError, KeyError, RecursionError) as exc:  # a shape check_decision missed
            return _error(f"not a decision ({type(exc).__name__})", 422)
        return JSONResponse(saved, status_code=201, headers=SECURITY_HEADERS)

    async def static(self, request: Request) -> Response:
        found = STATIC.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        media_type, data = found
        return Response(data, media_type=media_type, headers=SECURITY_HEADERS)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
TOKEN_COOKIE = "synth_review_token"


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token(host: str) -> str | None:
    """The page's token when bound to ``host``: none on a loopback address, a fresh one otherwise."""
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def url_host(host: str) -> str:
    """``host`` as a URL and a Host header name it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str) -> set[str]:
    """The names a request's Host header may give: loopback, the bound address, and, bound to every
    address, this machine's own names and addresses (the names a person on the network uses)."""
    names = {*LOOPBACK_NAMES, url_host(host).lower()}
    if host in ("0.0.0.0", "::"):
        machine = {socket.gethostname(), socket.getfqdn()}
        for name in list(machine):
            try:
                machine |= {url_host(str(info[4][0])) for info in socket.getaddrinfo(name, None)}
            except OSError:
                continue
        names |= {name.lower() for name in machine if name}
    return names


def host_name(header: str) -> str:
    """The host part of a Host header, without its port: ``[::1]:8765`` -> ``[::1]``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware in front of the page: the Host check, then the token where there is one.

    A request whose Host is not one of ``hosts`` gets 400 (a rebound DNS name). With a
    ``token``, a request carrying ``?token=`` gets a cookie and a redirect to the same page
    without it; every other request must bring the cookie (or the token), else 403.
    """

    def __init__(self, app, hosts: set[str], token: str | None):
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if host_name(headers.get("host", "")) not in self.hosts:
            await _plain(send, 400, "Invalid host header")
            return
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0]
            if given and secrets.compare_digest(given, self.token):
                rest = urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                where = scope["path"] + (f"?{rest}" if rest else "")
                await _plain(send, 303, "", [("location", where), ("set-cookie", cookie)])
                return
            jar = SimpleCookie()
            try:
                jar.load(headers.get("cookie", ""))
            except Exception:
                jar = SimpleCookie()
            held = jar.get(TOKEN_COOKIE)
            if held is None or not secrets.compare_digest(held.value, self.token):
                await _plain(send, 403, "open the address with its ?token= that synth review printed")
                return
        await self.app(scope, receive, send)


async def _plain(send, status: int, text: str, headers: list[tuple[str, str]] = ()) -> None:
    body = text.encode()
    fields = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    fields += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (IPv6 for an address with a colon); ``OSError`` if it cannot."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(64)
    return listener


def page_address(host: str, listener: socket.socket, token: str | None) -> str:
    """The address a person opens: loopback for a wildcard bind, the token in it off loopback."""
    shown = url_host("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    return f"http://{shown}:{listener.getsockname()[1]}/" + (f"?token={token}" if token else "")


def serve(review: Review, host: str, listener: socket.socket, token: str | None) -> None:
    """Serve the page on ``listener`` until Ctrl+C (a normal stop: the labels are saved as they come)."""
    import contextlib

    import uvicorn

    config = uvicorn.Config(build_app(review, host, token), log_config=None, access_log=False, lifespan="off")
    # uvicorn stops on Ctrl+C and then raises the signal again for the caller
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[listener])
