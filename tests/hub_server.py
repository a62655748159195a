"""A loopback stand-in for the Hugging Face Hub's upload and read APIs (publish, ``hf://`` corpora).

Why not ``hf-local-hub`` (the registry's "lightweight local Hub server"): its wheel holds
only a Python client and CLI; the server is a Go binary built from its repository, which is
not in the package and cannot be installed from the registry here. So the test starts this
server instead: a real HTTP server on 127.0.0.1 that answers the requests
``huggingface_hub`` makes to create a dataset repo, a branch and a commit (and to check a
README's YAML metadata, which it does before committing one), records each
request (the Authorization header replaced by whether it matched), and writes the committed
files into ``root/<repo_id>/<revision>/`` so the test can read them back with ``datasets``.

A test can make it misbehave (``faults``): a reply that is not JSON, a connection dropped
before the reply, an HTTP status (with a Retry-After), a slow reply or a redirect elsewhere,
for the first N requests whose path holds a given text.

Every file is answered as a "regular" upload (content inline in the commit, base64), so no
LFS or Xet transfer is involved; one POST to ``.../commit/<revision>`` is one commit.

Reading serves the files under ``root/<repo_id>/<revision>/`` (committed ones, or ones a test
puts there) the way ``HfFileSystem`` asks for them: the repo's revision info, the tree
listing (``recursive`` or one level), ``paths-info``, and ``resolve`` with HTTP range
requests; every byte a range request sends is added to ``bytes_served``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .conftest import send_json


class LoopbackHub:
    def __init__(self, root: Path, token: str):
        self.root = Path(root)
        self.token = token
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "branches": set}
        self.commits: list[dict] = []
        self.bytes_served = 0
        self.faults: list[dict] = []  # {"path", "method"?, "kind", "times", "status"?, "retry_after"?, ...}
        self.shas: dict[str, str] = {}  # repo id -> the commit its revision reports (default 40 zeros)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test reads self.requests
                pass

            def _reply(self, status: int, body: dict | None = None):
                send_json(self, status, {} if body is None else body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorised = self.headers.get("Authorization") == f"Bearer {hub.token}"
                hub.requests.append(
                    {
                        "method": self.command,
                        "path": unquote(self.path),
                        "authorised": authorised,
                        "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
                        "body": body,
                    }
                )
                path = unquote(self.path.split("?")[0])
                if hub.misbehave(self, path):
                    return None
                if self.command in ("GET", "HEAD") and "/resolve/" in path:  # public files: no token needed
                    return hub.send_file(self, path)
                if not authorised and not hub.public_read(self.command, path):
                    return self._reply(401, {"error": "Invalid credentials"})
                query = parse_qs(urlsplit(self.path).query)
                status, reply = hub.answer(self.command, path, body, query)
                return self._reply(status, reply)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def misbehave(self, handler, path: str) -> bool:
        """Answer with the first fault that matches this request, if any is left; True if one did."""
        for fault in self.faults:
            if fault["path"] not in path or fault.get("method", handler.command) != handler.command:
                continue
            if fault.get("times", 1) <= 0:
                continue
            fault["times"] = fault.get("times", 1) - 1
            kind = fault["kind"]
            if kind == "drop":  # the connection closes before any reply
                handler.close_connection = True
                handler.connection.shutdown(2)
                return True
            if kind == "slow":  # then answered as usual
                import time

                time.sleep(fault["seconds"])
                return False
            if kind == "garbage":
                body = b"<html>502 Bad Gateway, or so</html>"
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return True
            if kind == "redirect":
                handler.send_response(307)
                handler.send_header("Location", fault["location"])
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return True
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            send_json(handler, fault["status"], {"error": "the stand-in fails on purpose"}, headers)
            return True
        return False

    # -- reading -----------------------------------------------------------------------
    def _folder(self, repo_id: str, revision: str) -> Path:
        return self.root / repo_id / revision

    def public_read(self, method: str, path: str) -> bool:
        """Reads of a public repo need no token; a private one's do, as on the Hub."""
        parts = path.strip("/").split("/")
        if method not in ("GET", "POST") or parts[:2] != ["api", "datasets"] or len(parts) < 4:
            return False
        if len(parts) != 4 and (len(parts) < 6 or parts[4] not in ("revision", "tree", "paths-info")):
            return False
        return not self.repos.get(f"{parts[2]}/{parts[3]}", {}).get("private", False)

    def _entry(self, folder: Path, path: Path) -> dict:
        relative = path.relative_to(folder).as_posix()
        if path.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(relative.encode()).hexdigest(), "path": relative}
        data = path.read_bytes()
        return {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": relative}

    def _read(
        self, method: str, repo_id: str, action: str, rest: str, body: bytes, query
    ) -> tuple[int, object]:
        revision, _, inner = rest.partition("/")
        folder = self._folder(repo_id, revision or "main")
        if not folder.is_dir():
            return 404, {"error": f"Repository {repo_id} not found"}
        if action == "revision":
            files = [p for p in folder.rglob("*") if p.is_file()]
            siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in files]
            private = self.repos.get(repo_id, {}).get("private", False)
            sha = self.shas.get(repo_id, "0" * 40)
            return 200, {"id": repo_id, "sha": sha, "private": private, "siblings": siblings}
        if action == "tree":
            start = folder / inner if inner else folder
            if not start.is_dir():
                return 404, {"error": f"{inner} not found"}
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            found = start.rglob("*") if recursive else start.iterdir()
            return 200, [self._entry(folder, p) for p in sorted(found)]
        if action == "paths-info":
            paths = parse_qs(body.decode()).get("paths", [])
            return 200, [self._entry(folder, folder / p) for p in paths if (folder / p).exists()]
        return 404, {"error": f"not served by the stand-in: {method} {action}"}

    def send_file(self, handler, path: str) -> None:
        # /datasets/<namespace>/<name>/resolve/<revision>/<file>
        parts = path.strip("/").split("/")
        if len(parts) < 6 or parts[0] != "datasets" or parts[3] != "resolve":
            return send_json(handler, 404, {"error": f"{path}: this stand-in serves dataset files only"})
        repo_id, revision, inner = f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:])
        target = self._folder(repo_id, revision) / inner
        if not target.is_file():
            return send_json(handler, 404, {"error": f"{inner} not found"})
        data = target.read_bytes()
        status, start, end = 200, 0, len(data)
        wanted = handler.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            start, end = int(first or 0), min(len(data), int(last) + 1 if last else len(data))
            status = 206
        piece = data[start:end]
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(piece)))
        handler.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        handler.send_header("X-Repo-Commit", "0" * 40)
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        handler.end_headers()
        if handler.command == "GET":
            self.bytes_served += len(piece)
            handler.wfile.write(piece)

    # -- writing -----------------------------------------------------------------------
    def answer(self, method: str, path: str, body: bytes, query=None) -> tuple[int, object]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and len(parts) == 4 and method == "GET":
            return self._read(method, f"{parts[2]}/{parts[3]}", "revision", "main", body, query or {})
        if (
            parts[:2] == ["api", "datasets"]
            and len(parts) >= 6
            and parts[4] in ("revision", "tree", "paths-info")
        ):
            repo_id = f"{parts[2]}/{parts[3]}"
            return self._read(method, repo_id, parts[4], "/".join(parts[5:]), body, query or {})
        if method == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo_id = (
                f"{request['organization']}/{request['name']}"
                if request.get("organization")
                else request["name"]
            )
            if request.get("type") != "dataset":
                return 400, {"error": "this stand-in serves dataset repos only"}
            if repo_id in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": self._url(repo_id)}
            private = request.get("private") or request.get("visibility") == "private"
            self.repos[repo_id] = {"private": bool(private), "branches": {"main"}}
            main = self._folder(repo_id, "main")  # a new repo's first commit, as on the Hub
            main.mkdir(parents=True, exist_ok=True)
            (main / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
            return 200, {"url": self._url(repo_id), "name": repo_id}
        if (
            method == "PUT"
            and len(parts) == 5
            and parts[:2] == ["api", "datasets"]
            and parts[4] == "settings"
        ):
            repo_id = f"{parts[2]}/{parts[3]}"
            if repo_id not in self.repos:
                return 404, {"error": f"Repository {repo_id} not found"}
            if self.repos[repo_id].get("locked"):
                return 403, {"error": "You don't have the rights to change this repo's visibility"}
            request = json.loads(body)
            if "private" in request or "visibility" in request:
                private = request.get("private", request.get("visibility") == "private")
                self.repos[repo_id]["private"] = bool(private)
            return 200, {}
        if method == "POST" and path == "/api/validate-yaml":  # the client checks a README's metadata
            import yaml

            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---")[1]) if content.startswith("---") else None
            except yaml.YAMLError as exc:
                return 400, {"errors": [{"message": str(exc)}]}
            return 200, {"errors": [], "warnings": []}
        parts = path.strip("/").split("/")
        # /api/datasets/<namespace>/<name>/<action>/<revision>
        if len(parts) >= 6 and parts[:2] == ["api", "datasets"]:
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if repo_id not in self.repos:
                return 404, {"error": f"Repository {repo_id} not found"}
            if method == "POST" and action == "branch":
                if revision not in self.repos[repo_id]["branches"]:  # a new branch starts from main
                    self.repos[repo_id]["branches"].add(revision)
                    shutil.copytree(self._folder(repo_id, "main"), self._folder(repo_id, revision))
                return 200, {}
            if revision not in self.repos[repo_id]["branches"]:
                return 404, {"error": f"Revision {revision} not found"}
            if method == "POST" and action == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                }
            if method == "POST" and action == "commit":
                return self._commit(repo_id, revision, body)
        return 404, {"error": f"not served by the stand-in: {method} {path}"}

    def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, dict]:
        header, files, deleted = {}, {}, []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(item["value"]["path"])
            else:
                return 400, {"error": f"operation {item['key']} is not served by the stand-in"}
        folder = self.root / repo_id / revision
        for path in deleted:
            target = folder / path
            if not target.exists():
                return 404, {"error": f"{path} does not exist in {revision}"}
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        for path, content in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "summary": header.get("summary"),
                "files": files,
                "deleted": deleted,
            }
        )
        return 200, {
            "commitUrl": f"{self._url(repo_id)}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        }

    def _url(self, repo_id: str) -> str:
        return f"{self.endpoint}/datasets/{repo_id}"
