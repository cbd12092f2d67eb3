"""A fake Hugging Face hub on 127.0.0.1 for the installer's download tests.

It implements what huggingface_hub uses (read from its own source, file_download.py and hf_api.py):
- ``GET /api/models/{repo}[/revision/{rev}]?blobs=True``: model info with ``sha`` and ``siblings``
  (``rfilename``, ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``);
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: files in git answer 200 with ``ETag`` (git blob id),
  ``X-Repo-Commit`` and ``Content-Length``; LFS files answer ``302`` to a CDN on another origin
  (``localhost`` instead of ``127.0.0.1``) with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and
  ``X-Repo-Commit``, as the real hub does;
- ``HEAD|GET /cdn/{sha256}``: the content, with ``Range`` support (206 + ``Content-Range``).

Faults for tests: ``faults[path]`` is a list of what the next GETs of that file's content get, one
entry each: ``("drop", n)`` sends the full ``Content-Length`` but closes the connection once byte ``n`` of
the file is sent; ``("corrupt",)`` serves a copy with its first byte flipped; ``("fail",)`` answers 500.
Every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Logged:
    method: str
    path: str
    headers: dict
    status: int = 0
    sent: int = 0


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        s = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
        if self.is_lfs(path):
            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return s


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    faults: dict[str, list] = field(default_factory=dict)

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None,
                   commit: str | None = None) -> Repo:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
        files.update(extra or {})
        commit = commit or hashlib.sha1(repo_id.encode() + b"".join(files[k] for k in sorted(files))).hexdigest()
        repo = self.repos[repo_id] = Repo(commit, files)
        return repo

    def by_sha(self, sha: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for path, data in repo.files.items():
                if repo.is_lfs(path) and hashlib.sha256(data).hexdigest() == sha:
                    return path, data
        return None

    def requests_for(self, path_part: str, method: str = "GET") -> list[Logged]:
        return [r for r in self.log if r.method == method and path_part in r.path]

    # --- serving ---------------------------------------------------------------------------------

    def start(self) -> ServerHandle:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                entry = Logged(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                hub.log.append(entry)
                try:
                    self._route(entry, head)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, entry, status, headers=None, body=b"", head=False, cut: int | None = None):
                entry.status = status
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    entry.sent = cut
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)
                entry.sent = len(body)

            def _json(self, entry, status, obj, headers=None):
                self._send(entry, status, {"Content-Type": "application/json", **(headers or {})},
                           json.dumps(obj).encode())

            def _route(self, entry, head):
                url = urlparse(self.path)
                path = unquote(url.path)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None:
                        return self._json(entry, 404, {"error": "Repository not found"},
                                          {"X-Error-Code": "RepoNotFound"})
                    blobs = parse_qs(url.query).get("blobs", ["false"])[0].lower() == "true"
                    siblings = [repo.sibling(p) if blobs else {"rfilename": p} for p in sorted(repo.files)]
                    return self._json(entry, 200, {"id": m.group(1), "modelId": m.group(1), "sha": repo.commit,
                                                   "private": False, "siblings": siblings})
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    repo_id, rev, fpath = m.groups()
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        return self._json(entry, 404, {"error": "Repository not found"},
                                          {"X-Error-Code": "RepoNotFound"})
                    if rev not in ("main", repo.commit):
                        return self._json(entry, 404, {"error": "Revision not found"},
                                          {"X-Error-Code": "RevisionNotFound"})
                    if fpath not in repo.files:
                        return self._json(entry, 404, {"error": "Entry not found"},
                                          {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
                    data = repo.files[fpath]
                    common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
                    if repo.is_lfs(fpath):
                        sha = hashlib.sha256(data).hexdigest()
                        host, port = self.server.server_address[:2]
                        loc = f"http://localhost:{port}/cdn/{sha}?repo={repo_id}"
                        return self._send(entry, 302, {**common, "Location": loc, "ETag": f'"{git_blob_id(data)}"',
                                                       "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))},
                                          head=head)
                    return self._file(entry, fpath, data, {**common, "ETag": f'"{git_blob_id(data)}"'}, head)
                m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
                if m:
                    found = hub.by_sha(m.group(1))
                    if found is None:
                        return self._json(entry, 404, {"error": "no such blob"})
                    fpath, data = found
                    return self._file(entry, fpath, data, {"ETag": f'"{m.group(1)}"', "Accept-Ranges": "bytes"}, head)
                return self._json(entry, 404, {"error": "not found"})

            def _file(self, entry, fpath, data, headers, head):
                fault = None
                if not head and hub.faults.get(fpath):
                    fault = hub.faults[fpath].pop(0)
                if fault and fault[0] == "fail":
                    return self._json(entry, 500, {"error": "internal error"})
                if fault and fault[0] == "corrupt":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    if m:
                        start = int(m.group(1))
                        end = int(m.group(2)) if m.group(2) else len(data) - 1
                        if start >= len(data):
                            return self._send(entry, 416, {"Content-Range": f"bytes */{len(data)}"})
                        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
                        data_out = data[start:end + 1]
                        status = 206
                    else:
                        data_out = data
                else:
                    data_out = data
                cut = max(0, fault[1] - start) if fault and fault[0] == "drop" else None
                self._send(entry, status, {**headers, "Content-Length": str(len(data_out))}, data_out, head, cut)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        return ServerHandle(server, thread, f"http://127.0.0.1:{server.server_address[1]}")


@dataclass
class ServerHandle:
    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
