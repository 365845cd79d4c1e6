"""A local stand-in for the Hugging Face Hub API, for tests that cannot reach huggingface.co.

It serves the recorded responses in ``tests/fixtures/hub`` on 127.0.0.1 with the Hub's paths,
field names, pagination (``Link: <...>; rel="next"``) and error headers (``X-Error-Code``), so the
real ``huggingface_hub.HfApi`` can be pointed at it with ``HfApi(endpoint=server.url)``.

* ``GET /api/models/{id}[/revision/{rev}]?expand=...`` — only the expanded properties (plus
  ``_id`` and ``id``), like the Hub; an unknown ``expand`` value is a 400.
* ``GET /api/models?search=&author=&pipeline_tag=&filter=&sort=&limit=&expand=`` — paginated.
* ``HEAD|GET /{id}/resolve/{rev}/{file}`` — ``config.json`` and safetensors files (built from
  ``model.safetensors.header.json``), with ``Range`` support.
* Renamed repositories (``redirects.json``) answer 307, as the Hub does for legacy ids.
* Missing repositories answer 401 ``RepoNotFound``; files of gated repositories 401/403
  ``GatedRepo``; repository ids in :attr:`FakeHub.delays` sleep before answering.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hub"
EXPANDABLE = {
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
    "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
    "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors",
    "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData",
}
SORT_KEYS = {"downloads": "downloads", "likes": "likes", "createdAt": "createdAt", "lastModified": "lastModified",
             "trendingScore": "trendingScore"}


@dataclass(frozen=True)
class Request:
    """One request the fake Hub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


class FakeHub:
    """Serve ``tests/fixtures/hub`` like the Hub. Use as a context manager; ``url`` is the endpoint."""

    def __init__(self, fixtures: Path = FIXTURES, *, page_size: int = 2) -> None:
        self.models = {}
        for path in sorted((fixtures / "models").glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            self.models[record["id"]] = record
        self.redirects: dict[str, str] = json.loads((fixtures / "redirects.json").read_text(encoding="utf-8"))
        self.files_dir = fixtures / "files"
        self.page_size = page_size
        self.delays: dict[str, float] = {}
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, "HEAD")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, path_prefix: str = "/", method: str | None = None) -> int:
        """Requests received whose path starts with ``path_prefix``."""
        return sum(1 for r in self.requests if r.path.startswith(path_prefix) and method in (None, r.method))

    # -- dispatch --------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(req.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        self.requests.append(Request(method, path, query, req.headers.get("Authorization")))
        try:
            if path == "/api/models":
                self._list(req, method, query)
            elif path.startswith("/api/models/"):
                repo, _, revision = path[len("/api/models/"):].partition("/revision/")
                self._info(req, method, repo, revision or None, query, url.query)
            elif "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                revision, _, filename = rest.partition("/")
                self._file(req, method, repo, revision, filename)
            else:
                self._error(req, 404, None, "Not Found", method)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    # -- endpoints -------------------------------------------------------------------------------
    def _info(self, req, method, repo, revision, query, raw_query) -> None:
        if repo in self.delays:
            time.sleep(self.delays[repo])
        if repo in self.redirects:
            target = f"/api/models/{self.redirects[repo]}" + (f"/revision/{revision}" if revision else "")
            req.send_response(307)
            req.send_header("Location", target + (f"?{raw_query}" if raw_query else ""))
            req.send_header("Content-Length", "0")
            req.send_header("Connection", "close")
            req.close_connection = True
            req.end_headers()
            return
        model = self.models.get(repo)
        if model is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found", method)
        if revision is not None and revision not in ("main", model["sha"]):
            return self._error(req, 404, "RevisionNotFound", "Invalid rev id: " + revision, method)
        expand = query.get("expand", []) + query.get("expand[]", [])
        unknown = [e for e in expand if e not in EXPANDABLE]
        if unknown:
            return self._json(req, method, 400, {"error": f'"expand" must be one of {sorted(EXPANDABLE)}'})
        self._json(req, method, 200, self._project(model, expand))

    def _list(self, req, method, query) -> None:
        items = list(self.models.values())
        if "search" in query:
            items = [m for m in items if query["search"][0].lower() in m["id"].lower()]
        if "author" in query:
            items = [m for m in items if m["author"] == query["author"][0]]
        if "pipeline_tag" in query:
            items = [m for m in items if m.get("pipeline_tag") == query["pipeline_tag"][0]]
        for tag in query.get("filter", []):
            items = [m for m in items if tag in m.get("tags", []) or tag == m.get("library_name")]
        if "sort" in query:
            key = SORT_KEYS.get(query["sort"][0])
            if key is None:
                return self._json(req, method, 400, {"error": f"invalid sort {query['sort'][0]!r}"})
            items.sort(key=lambda m: m.get(key) or 0, reverse=True)
        limit = int(query.get("limit", ["1000"])[0])
        size = min(limit, self.page_size)
        offset = 0
        if "cursor" in query:
            offset = json.loads(base64.urlsafe_b64decode(query["cursor"][0]))["offset"]
        expand = query.get("expand", [])
        page = [self._project(m, expand) for m in items[offset:offset + size]]
        headers = {}
        if offset + size < len(items):
            cursor = base64.urlsafe_b64encode(json.dumps({"offset": offset + size}).encode()).decode()
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values] + [("cursor", cursor)]
            headers["Link"] = f'<{self.url}/api/models?{urlencode(params)}>; rel="next"'
        self._json(req, method, 200, page, headers)

    def _file(self, req, method, repo, revision, filename) -> None:
        model = self.models.get(repo)
        if model is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found", method)
        if model.get("gated"):
            code = 403 if req.headers.get("Authorization") else 401
            return self._error(req, code, "GatedRepo",
                               f"Access to model {repo} is restricted. You must have access to it and be "
                               "authenticated to access it. Please log in.", method)
        if revision not in ("main", model["sha"]):
            return self._error(req, 404, "RevisionNotFound", "Invalid rev id: " + revision, method)
        content = self._content(repo, filename, model)
        if content is None:
            return self._error(req, 404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"", method)
        status, body = 200, content
        headers = {"ETag": '"' + hashlib.sha1(content).hexdigest() + '"', "X-Repo-Commit": model["sha"],
                   "Accept-Ranges": "bytes"}
        ranged = req.headers.get("Range") or req.headers.get("range")
        if ranged and ranged.startswith("bytes="):
            start_text, _, end_text = ranged[len("bytes="):].partition("-")
            start, end = int(start_text), min(int(end_text or len(content) - 1), len(content) - 1)
            status, body = 206, content[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self._send(req, method, status, body, "application/octet-stream", headers)

    # -- helpers ---------------------------------------------------------------------------------
    def _content(self, repo: str, filename: str, model: dict) -> bytes | None:
        if filename not in {s["rfilename"] for s in model.get("siblings", [])}:
            return None
        folder = self.files_dir / repo.replace("/", "--")
        if (folder / filename).is_file():
            return (folder / filename).read_bytes()
        header_file = folder / f"{filename}.header.json"
        if filename.endswith(".safetensors") and header_file.is_file():
            header = json.loads(header_file.read_text(encoding="utf-8"))
            encoded = json.dumps(header, separators=(",", ":")).encode()
            encoded += b" " * (-len(encoded) % 8)
            data_size = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
            return struct.pack("<Q", len(encoded)) + encoded + bytes(data_size)
        return None

    @staticmethod
    def _project(model: dict, expand: list[str]) -> dict:
        if not expand:
            return dict(model)
        return {"_id": model["_id"], "id": model["id"], **{k: model[k] for k in expand if k in model}}

    def _error(self, req, status: int, code: str | None, message: str, method: str = "GET") -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(req, method, status, {"error": message}, headers)

    def _json(self, req, method, status, payload, headers=None) -> None:
        self._send(req, method, status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    @staticmethod
    def _send(req, method, status, body: bytes, content_type: str, headers=None) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Connection", "close")  # a stopped server must look unreachable, even to pooled clients
        req.close_connection = True
        for key, value in (headers or {}).items():
            req.send_header(key, value)
        req.end_headers()
        if method != "HEAD":
            req.wfile.write(body)


__all__ = ["FIXTURES", "FakeHub", "Request"]
