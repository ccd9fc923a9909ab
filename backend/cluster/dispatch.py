"""The server's worker on a Ray cluster: the same interface as ``server.worker.Worker``, jobs run on actors.

FIFO with the server's queue limit. One actor per GPU (``num_gpus=1``; on a CPU-only cluster one per
node), each keeping its models warm. A job whose windows can be spread (novel views, multi-view
edits) is lent the idle actors as helpers when nothing else waits; a job that arrives later takes a
lent actor back (its windows not yet started return to the job's own actor). Cancel reaches the actor between
steps. An actor that dies takes its job with it: the job is retried once on another actor (a fresh
one replaces the dead), else it ends ``interrupted`` -- never ``done``. Only the head writes the job
store, and a job's result exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from ..jobs import JobResult, ProgressEvent
from ..server.store import FINAL, JobStore, UnknownJob
from ..server.worker import WaitingJobs
from .actor import remote_actor_class

log = logging.getLogger(__name__)
SPREADABLE = ("novel_views", "relight_text", "stylize", "relight_envmap", "spatial_edit")


@dataclass
class _Slot:
    handle: object
    info: dict
    job: str | None = None  # the job it runs
    lent: str | None = None  # the job whose windows it may run meanwhile (taken back when a job waits)


@dataclass
class _Run:
    primary: int
    helpers: list[int] = field(default_factory=list)
    cancelled: bool = False


class RayWorker(WaitingJobs):
    def __init__(self, store: JobStore, max_queue: int = 32, address: str = "auto", actors: int | None = None, retries: int = 1) -> None:
        self.store, self.max_queue, self.address, self.n_actors, self.retries = store, max_queue, address, actors, retries
        self._pending: deque[str] = deque()
        self._attempts: dict[str, int] = {}
        self._runs: dict[str, _Run] = {}
        self._slots: list[_Slot] = []
        self._cond = self._guard = threading.Condition()
        self._stopping = False
        self.death: str | None = None
        self._thread = threading.Thread(target=self._loop, name="coupled-edit-ray-dispatch", daemon=True)

    # -- the cluster ------------------------------------------------------------------------------
    def start(self, recovered: list[str]) -> None:
        import ray

        if not ray.is_initialized():  # "local": a Ray instance of this process's own, every local GPU
            address = None if self.address == "local" else self.address
            try:
                if address and address != "auto":
                    reachable(address)  # Ray itself retries an unreachable address for minutes
                ray.init(address=address, namespace="coupled-edit", logging_level="ERROR", log_to_driver=False)
            except ConnectionError as e:
                raise ConnectionError(
                    f"no Ray cluster at {self.address!r} ({e}); start one (`ray start --head`, docs/cluster.md) "
                    "or give --ray local for a Ray instance inside this process"
                ) from e
        gpus = int(ray.cluster_resources().get("GPU", 0))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        count = self.n_actors or gpus or nodes
        self._gpu = gpus > 0
        self._slots = [self._new_slot() for _ in range(count)]
        log.info("Ray cluster: %d actors (%s)", count, "one GPU each" if self._gpu else "CPU")
        for job_id in recovered:
            self.enqueue(job_id, force=True)
        self._thread.start()

    def _new_slot(self) -> _Slot:
        import ray

        cls = remote_actor_class(num_gpus=1 if self._gpu else 0, num_cpus=1)
        handle = cls.options(scheduling_strategy="SPREAD").remote()
        return _Slot(handle, ray.get(handle.info.remote(), timeout=120))

    def actors(self) -> list[dict]:
        """Each actor: its process, node, GPUs, the job it is on and what it has run."""
        import ray

        with self._cond:
            slots = list(self._slots)
        out = []
        for s in slots:
            try:
                stats = ray.get(s.handle.stats.remote(), timeout=30) | {"alive": True}
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                stats = {"alive": False}  # lost; replaced when its job has been dealt with
            out.append(s.info | {"job": s.job, "lent_to": s.lent} | stats)
        return out

    def stop(self, timeout: float = 30) -> None:
        """Cancel the running jobs, wait for their results (up to ``timeout``), then end the actors."""
        import ray

        with self._cond:
            self._stopping = True
            for job_id in list(self._runs):
                self._cancel_running(job_id)
            self._cond.notify_all()
        self._thread.join(timeout=timeout)
        with self._cond:
            self._cond.wait_for(lambda: not self._runs, timeout=timeout)
            slots = list(self._slots)
        for s in slots:
            try:
                ray.kill(s.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass

    # -- the queue (server.worker.Worker's interface) ------------------------------------------------
    def enqueue(self, job_id: str, force: bool = False) -> None:
        with self._cond:
            self._add(job_id, force)
            self._cond.notify_all()

    @property
    def current(self) -> str | None:
        with self._cond:
            return next(iter(self._runs), None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def cancel(self, job_id: str) -> bool:
        with self._cond:
            if job_id in self._pending:
                self._pending.remove(job_id)
                waiting = True
            elif job_id in self._runs:
                self._cancel_running(job_id)
                return True
            else:
                return False
        if waiting:
            self.store.finish_without_running(job_id, "cancelled", "cancelled before it started")
        return True

    def _cancel_running(self, job_id: str) -> None:
        run = self._runs[job_id]
        run.cancelled = True
        for i in [run.primary, *run.helpers]:
            self._slots[i].handle.cancel.remote(job_id)

    def release_models(self) -> bool:
        """Frees the idle actors' models now (True when every actor was idle)."""
        with self._cond:
            idle = [s for s in self._slots if s.job is None and s.lent is None]
            for s in idle:
                s.handle.release.remote()
            return len(idle) == len(self._slots)

    # -- dispatch ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not (self._pending and any(s.job is None for s in self._slots)):
                        self._cond.wait()
                    if self._stopping:
                        return
                    job_id = self._pending.popleft()
                    free = [i for i, s in enumerate(self._slots) if s.job is None and s.lent is None]
                    lent = [i for i, s in enumerate(self._slots) if s.job is None and s.lent is not None]
                    if free:
                        run = _Run(free[0])
                    else:  # take a helper back from the job it was lent to
                        run = _Run(lent[0])
                        owner = self._runs.get(self._slots[run.primary].lent)
                        if owner is not None and run.primary in owner.helpers:
                            owner.helpers.remove(run.primary)
                        self._slots[run.primary].lent = None
                    if not self._pending and self._spreadable(job_id):
                        run.helpers = free[1:]  # nothing else waits: the idle actors share this job's windows
                    self._slots[run.primary].job = job_id
                    for i in run.helpers:
                        self._slots[i].lent = job_id
                    self._runs[job_id] = run
                    lend = [self._slots[i].handle for i in run.helpers]
                for h in lend:  # before the job can send them windows
                    _ask(h.lend.remote(job_id))
                threading.Thread(target=self._run, args=(job_id, run), name=f"ray-job-{job_id[:8]}", daemon=True).start()
        except BaseException as e:
            self.death = f"{type(e).__name__}: {e}"
            log.critical("the Ray dispatcher stopped: %s; restart the server", self.death, exc_info=True)
            raise

    def _spreadable(self, job_id: str) -> bool:
        try:
            return self.store.record(job_id).task in SPREADABLE
        except (UnknownJob, OSError, ValueError):
            return False

    def _run(self, job_id: str, run: _Run) -> None:
        import ray

        slot = self._slots[run.primary]
        lost = False
        try:
            job = self.store.folder(job_id)
            self.store.set_state(job_id, "running")
            files = {str(p.relative_to(job.inputs)): p.read_bytes() for p in job.inputs.rglob("*") if p.is_file()}
            helpers = [self._slots[i].handle for i in run.helpers]
            gpus = f", GPU {','.join(slot.info['gpus'])}" if slot.info.get("gpus") else ""
            lent = f"; {len(helpers)} more actor(s) share its windows" if helpers else ""
            where = f"on Ray actor pid {slot.info.get('pid')} ({slot.info.get('host')}{gpus}){lent}"
            job.append_log(ProgressEvent(job_id=job_id, stage="loading", message=where))
            spec_text = job.spec_path.read_text(encoding="utf-8")
            stream = slot.handle.run.options(num_returns="streaming").remote(job_id, spec_text, files, helpers)
            held: list[str] = []  # final events wait until result.json is written
            for ref in stream:
                item = ray.get(ref)
                if item[0] == "event":
                    ev = ProgressEvent.model_validate_json(item[1])
                    if ev.stage in FINAL:
                        held.append(item[1])
                    else:
                        job.append_log(ev)
                else:
                    self._write_result(job_id, JobResult.model_validate_json(item[1]), item[2], item[3], held)
            if job.result() is None:
                self._finish_quietly(job_id, "failed", "the actor ended the job without a result (see the server log)")
        except ray.exceptions.RayActorError as e:
            lost = True
            self._actor_lost(job_id, slot, e)
        except UnknownJob:
            log.info("job %s was deleted while it ran", job_id)
        except Exception as e:  # noqa: BLE001 - the dispatch itself failed: the job fails, the server goes on
            log.exception("job %s: error while dispatching", job_id)
            self._finish_quietly(job_id, "failed", f"server error while running the job on the cluster: {type(e).__name__}: {e}")
        finally:
            self._release(job_id, run, replace_primary=lost)

    def _write_result(self, job_id: str, result: JobResult, outputs: dict[str, bytes], tb: str, held: list[str]) -> None:
        job = self.store.folder(job_id)
        with self.store.lock:
            if job.result() is not None:
                return  # exactly once
            for rel, data in outputs.items():
                dest = (job.root / rel).resolve()
                if job.outputs.resolve() not in dest.parents:
                    raise ValueError(f"the actor sent an output outside outputs/: {rel!r}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            if tb:
                (job.root / "traceback.txt").write_text(tb, encoding="utf-8")
            job.write_result(result)
            self.store.set_state(job_id, result.status)
        for line in held:
            job.append_log(ProgressEvent.model_validate_json(line))
        log.info("job %s %s", job_id, result.status)

    def _actor_lost(self, job_id: str, slot: _Slot, err: Exception) -> None:
        where = f"actor pid {slot.info.get('pid')} on {slot.info.get('host')}"
        with self._cond:
            cancelled = self._runs[job_id].cancelled
            attempts = self._attempts[job_id] = self._attempts.get(job_id, 0) + 1
            retry = not cancelled and attempts <= self.retries
        job = self.store.folder(job_id)
        if retry:
            job.append_log(ProgressEvent(job_id=job_id, stage="queued", message=f"{where} was lost mid-job; retrying on another actor"))
            self.store.set_state(job_id, "queued")
            with self._cond:
                self._pending.appendleft(job_id)
                self._cond.notify_all()
        else:
            why = "cancelled; its actor was lost" if cancelled else f"{where} was lost mid-job ({attempts} attempts); resubmit it"
            self._finish_quietly(job_id, "cancelled" if cancelled else "interrupted", why)

    def _finish_quietly(self, job_id: str, status: str, message: str) -> None:
        try:
            self.store.finish_without_running(job_id, status, message)
        except Exception:  # noqa: BLE001 - the job folder itself is unusable; nothing more to record
            log.exception("job %s: could not record %s", job_id, status)

    def _release(self, job_id: str, run: _Run, replace_primary: bool) -> None:
        """The job's actors go back to the pool; dead ones (the primary, a helper) are replaced."""
        import ray

        with self._cond:
            helpers = [i for i in run.helpers if self._slots[i].lent == job_id]
        for i in [run.primary, *helpers]:
            dead = i == run.primary and replace_primary
            if not dead:
                try:
                    ray.get(self._slots[i].handle.forget.remote(job_id), timeout=30)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    dead = True
            if dead:
                try:
                    self._slots[i] = self._new_slot()
                except Exception:  # noqa: BLE001 - no room for a new actor now: the slot stays out
                    log.exception("could not replace a lost actor")
                    continue
            with self._cond:
                slot = self._slots[i]
                if i == run.primary:
                    slot.job = None
                elif slot.lent == job_id:
                    slot.lent = None
        with self._cond:
            self._runs.pop(job_id, None)
            if job_id not in self._pending:
                self._attempts.pop(job_id, None)
            self._cond.notify_all()


def reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) cluster address that answers, else a ConnectionError that says so."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r}: give host:port (the head's GCS port, 6379 by default), auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConnectionError(f"nothing answers at {hostport} ({e.strerror or e})") from None


def _ask(ref, timeout: float = 60) -> None:
    """Wait for an actor's answer; a lost actor shows up when its job runs."""
    import ray

    try:
        ray.get(ref, timeout=timeout)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        log.warning("an actor did not answer; it is replaced when its job ends")
