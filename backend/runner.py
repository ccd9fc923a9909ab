"""``run_job``: one JobSpec in a job folder -> outputs + result.json + progress events.

The same function serves the CLI, the add-on's in-process worker thread and the server's
worker. It never raises for a failed job: the failure is written to result.json (status
``failed`` with the message, or ``cancelled``) so no caller loses what happened.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from .input_files import check_view_sizes
from .jobs import JobFolder, JobResult
from .model_cache import ModelCache
from .model_needs import is_offline, missing_message, missing_models
from .models.weights import ModelUnavailable
from .sampling import Cancelled
from .tasks import RUNNERS
from .tasks.common import CancelFn, ProgressFn, Reporter, slug

__all__ = ["IMPLEMENTED", "ModelCache", "run_job", "slug"]

IMPLEMENTED = tuple(RUNNERS)
log = logging.getLogger(__name__)


def run_job(
    job: JobFolder, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None, cache: ModelCache | None = None
) -> JobResult:
    rep = Reporter(job, progress)
    started = time.time()
    owned = cache is None  # an in-process job (CLI, the add-on): its models go when it ends
    cache = cache or ModelCache()
    try:
        spec = job.spec()
        if spec.task not in IMPLEMENTED:
            raise NotImplementedError(f"task {spec.task!r} is not available in this version; available: {', '.join(IMPLEMENTED)}")
        check_view_sizes(job.inputs, spec.views)  # before any model loads: a pass of another size is a broken export
        if is_offline() and (missing := missing_models(spec.task, spec.models.model_dump(), spec.edit.model_dump())):
            raise ModelUnavailable(missing_message(missing))  # every missing model at once, not the first one loaded
        cache.begin_job()
        run = RUNNERS[spec.task]
        outputs, metadata = run(spec, job, rep, should_cancel, cache)
        if cache.end_job():
            rep.emit("running", message="compiled artefacts saved for the next process on this machine")
        result = JobResult(
            job_id=job.job_id, status="done", outputs=outputs, metadata=metadata, started_at=started, finished_at=time.time()
        )
        final = f"{len(outputs)} files in outputs/"
    except Cancelled as e:
        result = JobResult(job_id=job.job_id, status="cancelled", error=str(e), started_at=started, finished_at=time.time())
        final = str(e)
    except Exception as e:  # noqa: BLE001 - every failure is reported in result.json
        final = scrub_paths(f"{type(e).__name__}: {e}", job.root)
        (job.root / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        log.warning("job %s failed: %s", job.job_id, final)
        result = JobResult(job_id=job.job_id, status="failed", error=final, started_at=started, finished_at=time.time())
    if owned:
        cache.clear()  # frees the models and, on CUDA, the allocator's cached blocks
    # The result first, then the final event: whoever sees the event can read the result.
    job.write_result(result)
    rep.emit(result.status, message=final)
    return result


def scrub_paths(message: str, job_root: Path) -> str:
    """A message for people on other machines: the job folder's absolute path becomes ``<job>``."""
    for form in {str(job_root), str(job_root.resolve())}:
        message = message.replace(form, "<job>")
    return message
