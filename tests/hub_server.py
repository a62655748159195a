"""A loopback stand-in for the Hugging Face Hub's upload API, for the publish test.

Why not ``hf-local-hub`` (the registry's "lightweight local Hub server"): its wheel holds
only a Python client and CLI; the server is a Go binary built from its repository, which is
not in the package and cannot be installed from the registry here. So the test starts this
server instead: a real HTTP server on 127.0.0.1 that answers the requests
``huggingface_hub`` makes to create a dataset repo, a branch and a commit (and to check a
README's YAML metadata, which it does before committing one), records each
request (the Authorization header replaced by whether it matched), and writes the committed
files into ``root/<repo_id>/<revision>/`` so the test can read them back with ``datasets``.

Every file is answered as a "regular" upload (content inline in the commit, base64), so no
LFS or Xet transfer is involved; one POST to ``.../commit/<revision>`` is one commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from .conftest import send_json


class LoopbackHub:
    def __init__(self, root: Path, token: str):
        self.root = Path(root)
        self.token = token
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "branches": set}
        self.commits: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test reads self.requests
                pass

            def _reply(self, status: int, body: dict | None = None):
                send_json(self, status, body or {})

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
                if not authorised:
                    return self._reply(401, {"error": "Invalid credentials"})
                status, reply = hub.answer(self.command, unquote(self.path.split("?")[0]), body)
                return self._reply(status, reply)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
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
            return 200, {"url": self._url(repo_id), "name": repo_id}
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
                self.repos[repo_id]["branches"].add(revision)
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
        header, files = {}, {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
            else:
                return 400, {"error": f"operation {item['key']} is not served by the stand-in"}
        folder = self.root / repo_id / revision
        for path, content in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append(
            {"repo_id": repo_id, "revision": revision, "summary": header.get("summary"), "files": files}
        )
        return 200, {
            "commitUrl": f"{self._url(repo_id)}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        }

    def _url(self, repo_id: str) -> str:
        return f"{self.endpoint}/datasets/{repo_id}"
