"""The Ray actor that runs jobs: one per GPU, its models kept warm between jobs (ModelCache).

A job travels as its spec text and input files (bytes), so actors need no shared disk; the actor runs
it in a scratch folder with the ordinary ``run_job`` and streams back progress events, then one
final item with the result and the output files. The head writes them into its job store.

While it runs a job, an actor can be lent helpers: other actors that run some of the job's
independent SEVA windows (``ClusterSpread``); their results are exactly those of running here.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from ..jobs import JobFolder, parse_spec
from ..model_cache import ModelCache
from ..pipelines.spread import in_order

DONE = object()


class HelperWithdrawn(RuntimeError):
    """The actor was taken back for a job of its own before this window started; run it elsewhere."""


class JobActor:
    """Wrapped with ``ray.remote`` by ``remote_actor_class`` (ray stays an optional dependency)."""

    def __init__(self) -> None:
        self.cache = ModelCache()
        self.cancels: dict[str, threading.Event] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="coupled-edit-actor-"))
        self.counts = {"jobs": 0, "windows": 0}  # what this actor ran: jobs, and windows for other actors' jobs
        self.lent_to: str | None = None  # the job whose windows it may run
        self.busy = threading.Lock()  # one job or one window at a time

    def info(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ctx.get_node_id(), "host": socket.gethostname(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def stats(self) -> dict:
        return dict(self.counts)

    def cancel(self, job_id: str) -> bool:
        self.cancels.setdefault(job_id, threading.Event()).set()
        return True

    def release(self) -> None:
        self.cache.clear()

    def lend(self, job_id: str | None) -> None:
        """From now on run windows of ``job_id`` (None: of no job)."""
        self.lent_to = job_id

    def run(self, job_id: str, spec_text: str, files: dict[str, bytes], helpers: list):
        """A streaming generator: ("event", ProgressEvent JSON)..., then ("result", JobResult JSON, {outputs path: bytes}, traceback)."""
        from ..runner import run_job

        self.lent_to = None  # windows not yet started for another job go back to it
        cancel = self.cancels.setdefault(job_id, threading.Event())
        self.counts["jobs"] += 1
        root = self.scratch / job_id
        shutil.rmtree(root, ignore_errors=True)
        job = JobFolder.create(root, parse_spec(spec_text), files)
        events: queue.Queue = queue.Queue()
        box: dict = {}

        def work() -> None:
            try:
                with self.busy:  # a window this actor was still running for another job ends first
                    self.cache.spread = ClusterSpread(helpers, job_id, spec_text, cancel.is_set) if helpers else in_order
                    box["result"] = run_job(job, lambda ev: events.put(ev.model_dump_json()), cancel.is_set, self.cache)
            finally:
                self.cache.spread = in_order
                events.put(DONE)

        thread = threading.Thread(target=work, name=f"job-{job_id}", daemon=True)
        thread.start()
        try:
            while (item := events.get()) is not DONE:
                yield ("event", item)
            thread.join()
            outputs = {str(p.relative_to(root)): p.read_bytes() for p in sorted(job.outputs.rglob("*")) if p.is_file()}
            tb = (root / "traceback.txt").read_text(encoding="utf-8") if (root / "traceback.txt").exists() else ""
            yield ("result", box["result"].model_dump_json(), outputs, tb)
        finally:
            self.cancels.pop(job_id, None)
            shutil.rmtree(root, ignore_errors=True)

    def window(self, job_id: str, kind: str, spec_text: str, payload: dict) -> dict:
        """One SEVA window of another actor's job (``backend.tasks.windows``)."""
        from ..tasks.windows import run_window

        cancel = self.cancels.setdefault(job_id, threading.Event())
        with self.busy:
            if self.lent_to != job_id:
                raise HelperWithdrawn(f"this actor now runs a job of its own; window of job {job_id} refused")
            self.counts["windows"] += 1
            self.cache.begin_job()
            return run_window(kind, parse_spec(spec_text), payload, self.cache, cancel.is_set)

    def forget(self, job_id: str) -> None:
        """The job this actor helped with has ended: drop its cancel flag."""
        self.cancels.pop(job_id, None)
        if self.lent_to == job_id:
            self.lent_to = None


class ClusterSpread:
    """Windows 0, n, 2n, ... run here; the others go round the ``helpers`` (n = 1 + helpers).

    A helper that dies mid-window, or was taken back for a job of its own (``HelperWithdrawn``), costs
    time, not the result: its window is run here instead."""

    def __init__(self, helpers: list, job_id: str, spec_text: str, should_cancel) -> None:
        self.helpers, self.job_id, self.spec_text, self.should_cancel = helpers, job_id, spec_text, should_cancel

    def __call__(self, kind: str, payloads: list[dict], run_here) -> list[dict]:
        import ray

        n = 1 + len(self.helpers)
        away = {i: self.helpers[i % n - 1].window.remote(self.job_id, kind, self.spec_text, p) for i, p in enumerate(payloads) if i % n}
        results: dict[int, dict] = {}
        try:
            for i, p in enumerate(payloads):
                if i % n == 0:
                    results[i] = run_here(p)
            for i, ref in away.items():
                try:
                    results[i] = ray.get(ref)
                except (ray.exceptions.RayActorError, HelperWithdrawn):
                    results[i] = run_here(payloads[i])
        except BaseException:
            for h in self.helpers:  # cancelled or failed here: stop the helpers' windows too
                h.cancel.remote(self.job_id)
            raise
        return [results[i] for i in range(len(payloads))]


def remote_actor_class(num_gpus: float, num_cpus: float):
    """``JobActor`` as a Ray actor class: one GPU each (or CPUs on a CPU cluster); a second thread
    takes ``cancel`` and helper windows while a job runs."""
    import ray

    return ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_concurrency=4, max_restarts=0)(JobActor)
