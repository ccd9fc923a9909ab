"""Start, wait for and stop a local job server from another process (the Blender add-on).

Pure standard library + requests: Blender's Python needs no torch for this. The server runs
in the interpreter the user chose (one with torch and the models' packages).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `backend` package


def start_local_server(
    python: str | None = None,
    port: int = 8765,
    jobs_dir: str | os.PathLike = "server_jobs",
    token: str | None = None,
    log_path: str | os.PathLike | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``python -m backend serve`` on 127.0.0.1:port in a child process; its output goes to ``log_path``."""
    python = python or sys.executable
    if not Path(python).exists():
        raise FileNotFoundError(f"Python interpreter {python!r} not found: set the path to a Python with torch installed")
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": str(PACKAGE_ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("COUPLED_EDIT_TOKEN", None)
    if token:
        env["COUPLED_EDIT_TOKEN"] = token  # not on the command line, where other users could read it
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    cmd = [python, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port), "--jobs-dir", str(jobs_dir)]
    return subprocess.Popen(cmd, cwd=PACKAGE_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None, log_path=None) -> dict:
    """Poll /health until it answers; fail early (with the log's tail) when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path and Path(log_path).exists() else ""
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            r = requests.get(url.rstrip("/") + "/health", timeout=2)
            if r.ok:
                return r.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url}/health within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """Ask the server to stop (SIGTERM: uvicorn shuts down gracefully), kill it if it does not."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


# --- the managed server: started on first use in the backend environment, loopback, random token ----

_MANAGED: dict = {}
_MANAGED_LOCK = threading.Lock()


def ensure_managed_server(
    python: str | os.PathLike, jobs_dir: str | os.PathLike, extra_env: dict[str, str] | None = None, timeout: float = 300.0
) -> tuple[str, str]:
    """(url, token) of a server in ``python`` on a free loopback port with a random token, started on the
    first call and reused while it runs (the artist never sees a port or a token)."""
    import secrets
    import socket

    key = (str(python), str(jobs_dir), tuple(sorted((extra_env or {}).items())))
    with _MANAGED_LOCK:
        proc = _MANAGED.get("proc")
        if proc is not None and proc.poll() is None and _MANAGED["key"] == key:
            return _MANAGED["url"], _MANAGED["token"]
        _stop_managed()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        Path(jobs_dir).mkdir(parents=True, exist_ok=True)
        token, log = secrets.token_urlsafe(24), Path(jobs_dir) / "server.log"
        proc = start_local_server(str(python), port, jobs_dir, token, log, extra_env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, timeout, proc, log)
        except BaseException:
            stop_server(proc)
            raise
        _MANAGED.update(proc=proc, url=url, token=token, log=log, key=key)
        return url, token


def managed_server() -> dict:
    """{"url", "log", "running"} of the managed server (the token stays inside this process)."""
    proc = _MANAGED.get("proc")
    return {"url": _MANAGED.get("url"), "log": _MANAGED.get("log"), "running": proc is not None and proc.poll() is None}


def stop_managed_server() -> None:
    with _MANAGED_LOCK:
        _stop_managed()


def _stop_managed() -> None:
    """Stop the managed server (the caller holds ``_MANAGED_LOCK``)."""
    proc = _MANAGED.pop("proc", None)
    _MANAGED.clear()
    if proc is not None:
        stop_server(proc)
