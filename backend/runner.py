"""``run_job``: one JobSpec in a job folder -> outputs + result.json + progress events.

The same function serves the CLI, the add-on's in-process worker thread and the server's
worker. It never raises for a failed job: the failure is written to result.json (status
``failed`` with the message, or ``cancelled``) so no caller loses what happened.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from .jobs import JobFolder, JobResult
from .sampling import Cancelled
from .tasks import RUNNERS
from .tasks.common import CancelFn, ProgressFn, Reporter, slug

__all__ = ["IMPLEMENTED", "ModelCache", "run_job", "slug"]

IMPLEMENTED = tuple(RUNNERS)


class ModelCache:
    """Keeps loaded models between jobs (the server keeps them warm); ``clear()`` frees memory.

    Only the current job's models stay resident (VRAM is the scarce resource): loading a model
    drops those the current job has not used, so a job needing two (SEVA and an editor) keeps both.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._used: set[tuple] = set()

    def begin_job(self) -> None:
        self._used = set()

    def get(self, key: tuple, load: Callable[[], object]) -> object:
        if key not in self._models:
            stale = [k for k in self._models if k not in self._used]
            for k in stale:
                del self._models[k]
            if stale:
                self._free()
            self._models[key] = load()
        self._used.add(key)
        return self._models[key]

    def clear(self) -> None:
        self._models.clear()
        self._free()

    @staticmethod
    def _free() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def run_job(
    job: JobFolder, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None, cache: ModelCache | None = None
) -> JobResult:
    rep = Reporter(job, progress)
    started = time.time()
    try:
        spec = job.spec()
        if spec.task not in IMPLEMENTED:
            raise NotImplementedError(f"task {spec.task!r} is not available in this version; available: {', '.join(IMPLEMENTED)}")
        cache = cache or ModelCache()
        cache.begin_job()
        run = RUNNERS[spec.task]
        outputs, metadata = run(spec, job, rep, should_cancel, cache)
        result = JobResult(
            job_id=job.job_id, status="done", outputs=outputs, metadata=metadata, started_at=started, finished_at=time.time()
        )
        rep.emit("done", message=f"{len(outputs)} files in {job.outputs}")
    except Cancelled as e:
        result = JobResult(job_id=job.job_id, status="cancelled", error=str(e), started_at=started, finished_at=time.time())
        rep.emit("cancelled", message=str(e))
    except Exception as e:  # noqa: BLE001 - every failure is reported in result.json
        msg = f"{type(e).__name__}: {e}"
        (job.root / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        result = JobResult(job_id=job.job_id, status="failed", error=msg, started_at=started, finished_at=time.time())
        rep.emit("failed", message=msg)
    job.write_result(result)
    return result
