"""HTTP client of the job server (``python -m backend serve``), built on ``requests``.

Importable without torch or pydantic: the Blender add-on uses it from its worker thread.

    c = Client("http://127.0.0.1:8765", token=None)
    c.check_version()
    result = run_remote_job(c, "path/to/job_folder", progress=print)   # like runner.run_job

Errors say what to do: ``ServerUnavailable`` (not running / unreachable), ``AuthError`` (token),
``VersionMismatch``, ``ServerError`` (the server's message, e.g. a spec error or a full queue).
Connection failures are retried (a request that never reached the server is safe to resend);
reading an event stream resumes where it broke off.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__

SCHEMA_VERSION = 1  # backend.jobs.SCHEMA_VERSION (not imported: that module needs pydantic)


class ServerError(RuntimeError):
    """The server answered with an error; the message is the server's own."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnavailable(ServerError):
    pass


class AuthError(ServerError):
    pass


class VersionMismatch(ServerError):
    pass


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8765", token: str | None = None, timeout: float = 30.0, retries: int = 3) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"server address {url!r} must start with http:// or https://, e.g. http://127.0.0.1:8765")
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=0, status=0, backoff_factor=0.3, allowed_methods=None)
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        try:
            r = self.session.request(method, self.url + path, **kw)
        except requests.ConnectionError:
            raise ServerUnavailable(
                f"no Coupled Edit server answers at {self.url}: start it (`python -m backend serve`, or Start Server in the "
                "add-on preferences) or check the address and port"
            ) from None
        except requests.Timeout:
            raise ServerUnavailable(f"the server at {self.url} did not answer within {kw['timeout']} s; is it overloaded?") from None
        if r.status_code == 401:
            raise AuthError(
                "the server refused the token: set the same token as the server's --token (add-on preferences: Server Token)", 401
            )
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if not isinstance(detail, str):
                detail = json.dumps(detail)
            raise ServerError(f"server error {r.status_code}: {detail}", r.status_code)
        return r

    # -- server ---------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/health").json()

    def check_version(self) -> dict:
        h = self.health()
        if h.get("schema_version") != SCHEMA_VERSION:
            raise VersionMismatch(
                f"the server (backend {h.get('version')}) speaks job schema {h.get('schema_version')}, this client "
                f"(backend {__version__}) speaks {SCHEMA_VERSION}: update the older of the two"
            )
        return h

    def models(self) -> list[dict]:
        return self._request("GET", "/models").json()

    def release_models(self) -> bool:
        return self._request("POST", "/models/release").json()["released"]

    # -- jobs -----------------------------------------------------------------------------------
    def submit(self, spec: dict, files: dict[str, str | os.PathLike | bytes] | None = None) -> str:
        opened = []
        try:
            parts = []
            for name, src in (files or {}).items():
                if isinstance(src, bytes):
                    parts.append(("files", (name, src)))
                else:
                    fh = open(src, "rb")  # noqa: SIM115 - closed below, after the upload
                    opened.append(fh)
                    parts.append(("files", (name, fh)))
            r = self._request("POST", "/jobs", data={"spec": json.dumps(spec)}, files=parts or None, timeout=max(self.timeout, 600))
        finally:
            for fh in opened:
                fh.close()
        return r.json()["job_id"]

    def submit_folder(self, job_dir: str | os.PathLike) -> str:
        """A local job folder (job.json + inputs/), as the add-on or ``export_rig`` writes it."""
        root = Path(job_dir)
        spec = json.loads((root / "job.json").read_text(encoding="utf-8"))
        files = {p.name: p for p in sorted((root / "inputs").iterdir()) if p.is_file()} if (root / "inputs").is_dir() else {}
        return self.submit(spec, files)

    def status(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{job_id}").json()

    def jobs(self) -> list[dict]:
        return self._request("GET", "/jobs").json()["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/jobs/{job_id}/cancel").json()

    def resubmit(self, job_id: str) -> str:
        return self._request("POST", f"/jobs/{job_id}/resubmit").json()["job_id"]

    def result(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{job_id}/result").json()

    def delete(self, job_id: str) -> None:
        self._request("DELETE", f"/jobs/{job_id}")

    def events(self, job_id: str, since: int = 0) -> Iterator[dict | None]:
        """Progress events as dicts; ``None`` for keep-alives (a chance to check for cancel). Resumes after a broken stream."""
        n, broken = since, 0
        while True:
            try:
                r = self._request("GET", f"/jobs/{job_id}/events", params={"since": n}, stream=True, timeout=(self.timeout, 60))
                with r:
                    event = None
                    for line in r.iter_lines(decode_unicode=True):
                        if line.startswith(":"):
                            yield None
                        elif line.startswith("event:"):
                            event = line.split(":", 1)[1].strip()
                        elif line.startswith("data:") and event == "progress":
                            n += 1
                            yield json.loads(line.split(":", 1)[1])
                        elif line.startswith("data:") and event == "end":
                            return
                return  # the server closed the stream cleanly
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                broken += 1
                if broken > 5:
                    msg = f"the event stream of job {job_id} at {self.url} keeps breaking; is the server still up?"
                    raise ServerUnavailable(msg) from None
                time.sleep(0.5 * broken)  # then resume after the last event received

    def wait(self, job_id: str, on_event: Callable[[dict], None] | None = None, should_cancel: Callable[[], bool] | None = None) -> dict:
        """Follow a job to its end; returns its result (dict). ``should_cancel`` is checked at every event."""
        asked = False
        for ev in self.events(job_id):
            if ev is not None and on_event is not None:
                on_event(ev)
            if should_cancel is not None and not asked and should_cancel():
                self.cancel(job_id)
                asked = True
        return self.final_result(job_id, should_cancel=None if asked else should_cancel)

    def final_result(self, job_id: str, timeout: float | None = None, should_cancel: Callable[[], bool] | None = None) -> dict:
        """The result once the job has finished: a 409 (not finished yet: a stream that a proxy closed
        early, an older server that ended the stream before writing the result) is retried."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.result(job_id)
            except ServerError as e:
                if e.status != 409 or (deadline is not None and time.monotonic() > deadline):
                    raise
            if should_cancel is not None and should_cancel():
                self.cancel(job_id)
                should_cancel = None
            time.sleep(0.25)

    def download(self, job_id: str, dest: str | os.PathLike) -> dict:
        """Every output file and result.json into ``dest`` (a job folder); returns the result."""
        dest = Path(dest)
        result = self.result(job_id)
        for out in result.get("outputs", []):
            rel = Path(out["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise ServerError(f"the server listed an unsafe output path {out['path']!r}; not downloading it")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            r = self._request("GET", f"/jobs/{job_id}/files/{rel.as_posix()}", stream=True, timeout=(self.timeout, 300))
            tmp = target.with_name(f".{target.name}.part")
            with r, tmp.open("wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
            os.replace(tmp, target)
        tmp = dest / ".result.json.part"
        tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
        os.replace(tmp, dest / "result.json")
        return result


def run_remote_job(
    client: Client,
    job_dir: str | os.PathLike,
    progress: Callable[[SimpleNamespace], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict:
    """``runner.run_job`` over HTTP: submit the local job folder, relay progress, and bring the outputs
    and result.json back into it. A failure (server gone, refused spec) is written to result.json too."""
    root = Path(job_dir)
    try:
        client.check_version()
        job_id = client.submit_folder(root)
        (root / "server_job_id").write_text(job_id, encoding="utf-8")
        client.wait(job_id, on_event=(lambda ev: progress(SimpleNamespace(**ev))) if progress else None, should_cancel=should_cancel)
        return client.download(job_id, root)
    except (ServerError, requests.RequestException, OSError) as e:  # never leave the folder without a result
        msg = str(e) if isinstance(e, ServerError) else f"{type(e).__name__} while talking to {client.url}: {e}"
        result = {"job_id": root.name, "status": "failed", "error": msg, "outputs": [], "metadata": {}}
        (root / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        if progress:
            progress(SimpleNamespace(stage="failed", step=0, total=0, message=msg, eta_s=None))
        return result
