"""A stand-in for the model hub over plain HTTP on loopback (weights cannot be downloaded here): model
info with file sizes, and resolve (HEAD/GET, Range) for a few repos, gated ones answering 401
without a token. huggingface_hub talks to it through HF_ENDPOINT (with HF_HUB_DISABLE_XET=1)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """A few hub routes over plain HTTP: model info with file sizes, resolve (HEAD/GET with Range)."""

    def __init__(self, repos: dict, gated=(), chunk_delay: float = 0.0):
        self.repos, self.gated, self.auth, self.chunk_delay = repos, set(gated), [], chunk_delay
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _file(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if "resolve" not in parts:
                    return None, None
                i = parts.index("resolve")
                repo = "/".join(parts[:i])
                name = "/".join(parts[i + 2 :])
                return repo, name

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                if self.path.startswith("/api/models/"):
                    repo = "/".join(self.path.split("?")[0].split("/")[3:5])
                    hub.auth.append(self.headers.get("authorization"))
                    files = hub.repos.get(repo)
                    if files is None:
                        return self._status(404, {"X-Error-Code": "RepoNotFound"})
                    body = json.dumps(
                        {"id": repo, "sha": "a" * 40, "siblings": [{"rfilename": n, "size": len(d)} for n, d in files.items()]}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self._serve(body=True)

            def _status(self, code, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body):
                repo, name = self._file()
                hub.auth.append(self.headers.get("authorization"))
                if repo in hub.gated and not self.headers.get("authorization"):
                    return self._status(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"})
                data = hub.repos.get(repo, {}).get(name)
                if data is None:
                    return self._status(404, {"X-Error-Code": "EntryNotFound"})
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206 if rng else 200)
                self.send_header("X-Repo-Commit", "a" * 40)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if body:
                    for i in range(start, len(data), 1 << 18):
                        self.wfile.write(data[i : i + (1 << 18)])
                        time.sleep(hub.chunk_delay)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
