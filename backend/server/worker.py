"""The single GPU worker: a FIFO of job ids, run one at a time with models kept warm."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import MutableSequence

from ..model_cache import ModelCache
from ..runner import run_job
from .store import JobStore, UnknownJob

log = logging.getLogger(__name__)


class WaitingJobs:
    """The jobs waiting to run, in order, under the server's queue limit: what every worker (this one,
    ``cluster.dispatch.RayWorker``) answers the API with. ``_guard`` is the worker's lock."""

    max_queue: int
    _pending: MutableSequence[str]  # a list, or a deque
    _guard: threading.Lock | threading.Condition

    def queue_full(self) -> bool:
        with self._guard:
            return len(self._pending) >= self.max_queue

    def position(self, job_id: str) -> int | None:
        with self._guard:
            return self._pending.index(job_id) + 1 if job_id in self._pending else None

    def queued(self) -> int:
        with self._guard:
            return len(self._pending)

    def _add(self, job_id: str, force: bool) -> None:
        """Call with ``_guard`` held."""
        if not force and len(self._pending) >= self.max_queue:
            raise OverflowError(f"the queue is full ({self.max_queue} jobs waiting); try again when one has finished")
        self._pending.append(job_id)


class Worker(WaitingJobs):
    def __init__(self, store: JobStore, max_queue: int = 32) -> None:
        self.store = store
        self.max_queue = max_queue
        self.cache = ModelCache()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: list[str] = []  # queued ids in order (for positions and the queue limit)
        self._cancel: dict[str, threading.Event] = {}
        self._release_after_job = False
        self.current: str | None = None
        self.death: str | None = None  # why the loop thread ended, if it did
        self._lock = self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="coupled-edit-worker", daemon=True)

    def start(self, recovered: list[str]) -> None:
        for job_id in recovered:
            self.enqueue(job_id, force=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            for ev in self._cancel.values():
                ev.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- queue ----------------------------------------------------------------------------------
    def enqueue(self, job_id: str, force: bool = False) -> None:
        with self._lock:
            self._add(job_id, force)
            self._cancel[job_id] = threading.Event()
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> bool:
        """True when the job will stop (or was still waiting and is now cancelled)."""
        with self._lock:
            ev = self._cancel.get(job_id)
            waiting = job_id in self._pending
            if waiting:
                self._pending.remove(job_id)
        if ev is None:
            return False
        ev.set()
        if waiting:
            self.store.finish_without_running(job_id, "cancelled", "cancelled before it started")
        return True

    def release_models(self) -> bool:
        """Free VRAM now when idle (True), else after the running job (False)."""
        with self._lock:
            if self.current is None:
                self.cache.clear()
                return True
            self._release_after_job = True
            return False

    # -- the loop -------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        try:
            while True:
                job_id = self._queue.get()
                if job_id is None:
                    return
                self._run_one(job_id)
        except BaseException as e:  # the thread is ending: say so where people look
            self.death = f"{type(e).__name__}: {e}"
            log.critical("the GPU worker stopped: %s; restart the server", self.death, exc_info=True)
            raise

    def _run_one(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._pending:
                return  # cancelled while waiting
            self._pending.remove(job_id)
            self.current = job_id
            cancel = self._cancel[job_id]
        try:
            self.store.set_state(job_id, "running")
            result = run_job(self.store.folder(job_id), should_cancel=cancel.is_set, cache=self.cache)
            self.store.set_state(job_id, result.status)
            log.info("job %s %s", job_id, result.status)
        except UnknownJob:
            log.info("job %s was deleted before it ran", job_id)
        except Exception as e:  # noqa: BLE001 - outside run_job (store, disk): the job fails, the worker goes on
            log.exception("job %s: error outside the run", job_id)
            try:
                self.store.finish_without_running(job_id, "failed", f"server error while running the job: {type(e).__name__}: {e}")
            except Exception:  # noqa: BLE001 - the job folder itself is unusable; nothing more to record
                log.exception("job %s: could not record the failure", job_id)
        finally:
            with self._lock:
                self.current = None
                self._cancel.pop(job_id, None)
                release, self._release_after_job = self._release_after_job, False
            if release:
                self.cache.clear()
