"""Bounded load on a real server (loopback only): status polls, event streams and submissions
while a job runs; latency percentiles, and a check that no job or result is lost.

    python bench/server_load.py --pollers 16 --polls 200 --followers 4 --submits 20 --out bench/results/server_load.json

Tiny models (flux-tiny, 64², a few steps): the numbers measure the server, not the models.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.client import Client  # noqa: E402
from backend.server.launcher import start_local_server, stop_server, wait_healthy  # noqa: E402


def spec(steps: int, seed: int) -> dict:
    return {
        "task": "couple_images",
        "edit": {"prompts": ["a red cube", "a blue cube"]},
        "models": {"generator": "flux-tiny"},
        "sampling": {"steps": steps, "seed": seed},
        "output": {"width": 64, "height": 64},
    }


def pct(xs: list[float]) -> dict:
    a = np.array(xs) * 1000
    p50, p95, p99 = (float(np.percentile(a, q)) for q in (50, 95, 99))
    return {"n": len(xs), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": float(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pollers", type=int, default=16)
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--followers", type=int, default=4)
    ap.add_argument("--submits", type=int, default=20)
    ap.add_argument("--limit-s", type=float, default=600)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    proc = start_local_server(sys.executable, port, tmp / "jobs", None, tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 120, proc, tmp / "server.log")
        c = Client(url)
        running = c.submit(spec(200, 0))
        polls, submits, events, errors, ids = [], [], [], [], []
        lock = threading.Lock()

        def poll() -> None:
            cl = Client(url)
            for _ in range(a.polls):
                t = time.perf_counter()
                try:
                    cl.status(running)
                except Exception as e:  # noqa: BLE001 - reported
                    errors.append(repr(e))
                with lock:
                    polls.append(time.perf_counter() - t)

        def submit(i: int) -> None:
            t = time.perf_counter()
            try:
                job = Client(url).submit(spec(3, i))
                with lock:
                    ids.append(job)
                    submits.append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(repr(e))

        def follow() -> None:
            n = sum(1 for ev in Client(url).events(running) if ev is not None)
            with lock:
                events.append(n)

        threads = [threading.Thread(target=poll) for _ in range(a.pollers)]
        threads += [threading.Thread(target=submit, args=(i,)) for i in range(a.submits)]
        threads += [threading.Thread(target=follow) for _ in range(a.followers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(a.limit_s)
        results = {j: c.wait(j)["status"] for j in [running, *ids]}
        wall = time.perf_counter() - t0
        listed = {j["job_id"] for j in c.jobs()}
        report = {
            "counts": vars(a),
            "wall_s": wall,
            "status_polls": pct(polls),
            "submissions": pct(submits),
            "event_streams_events": events,
            "errors": errors,
            "jobs_done": sum(s == "done" for s in results.values()),
            "jobs_total": len(results),
            "jobs_listed": len(listed & set(results)),
            "cpu": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() + " cores",
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "date": time.strftime("%Y-%m-%d"),
        }
        print(json.dumps(report, indent=2))
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
        assert not errors and report["jobs_done"] == report["jobs_total"] == report["jobs_listed"], "a job or result was lost"
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
