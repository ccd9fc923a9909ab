"""Jobs on disk: one folder per job under the jobs dir, safe to read after any crash.

    <jobs_dir>/<id>/job.json, inputs/, outputs/, log      the JobFolder layout (backend.jobs)
    <jobs_dir>/<id>/state.json                            queued | running (written atomically)
    <jobs_dir>/<id>/result.json                           written once the job ends (the truth)
    <jobs_dir>/.incoming-<id>/                            an upload in progress (removed at start)

A job is finished exactly when result.json exists; a job found "running" without one after a
restart was interrupted: it gets an ``interrupted`` result (never ``done``) and can be resubmitted.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..jobs import JobFolder, JobResult, JobSpec, ProgressEvent, atomic_write_text

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FINAL = ("done", "failed", "cancelled", "interrupted")


class UnknownJob(KeyError):
    pass


@dataclass
class JobRecord:
    job_id: str
    state: str  # queued, running, done, failed, cancelled, interrupted
    submitted_at: float
    task: str


class JobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # -- layout ---------------------------------------------------------------------------------
    def folder(self, job_id: str) -> JobFolder:
        if not JOB_ID.match(job_id) or not (self.root / job_id / "job.json").exists():
            raise UnknownJob(job_id)
        return JobFolder(self.root / job_id)

    def incoming(self) -> tuple[str, Path]:
        """A fresh id and a private folder to receive its upload into."""
        job_id = uuid.uuid4().hex
        tmp = self.root / f".incoming-{job_id}"
        tmp.mkdir()
        return job_id, tmp

    @staticmethod
    def upload_dir(tmp: Path) -> Path:
        """Where a submission's files are written while it is received (the job's future inputs/)."""
        return tmp / "job" / "inputs"

    def commit(self, job_id: str, tmp: Path, spec: JobSpec) -> JobFolder:
        """Lay the job out inside ``tmp`` (checking every named input arrived), then publish it with one rename."""
        staged = JobFolder.create(tmp / "job", spec)
        self._write_state(staged.root, "queued", time.time(), spec.task)
        final = self.root / job_id
        staged.root.rename(final)
        shutil.rmtree(tmp, ignore_errors=True)
        return JobFolder(final)

    # -- state ----------------------------------------------------------------------------------
    @staticmethod
    def _write_state(root: Path, state: str, submitted_at: float, task: str) -> None:
        atomic_write_text(root / "state.json", json.dumps({"state": state, "submitted_at": submitted_at, "task": task}))

    def record(self, job_id: str) -> JobRecord:
        job = self.folder(job_id)
        st = json.loads((job.root / "state.json").read_text(encoding="utf-8"))
        result = job.result()
        state = result.status if result is not None else st["state"]
        return JobRecord(job_id, state, st["submitted_at"], st["task"])

    def set_state(self, job_id: str, state: str) -> None:
        with self.lock:
            rec = self.record(job_id)
            self._write_state(self.folder(job_id).root, state, rec.submitted_at, rec.task)

    def finish_without_running(self, job_id: str, status: str, message: str) -> None:
        """A result for a job the worker did not run to its end (cancelled in the queue, interrupted)."""
        job = self.folder(job_id)
        with self.lock:
            if job.result() is not None:
                return
            job.write_result(JobResult(job_id=job_id, status=status, error=message, finished_at=time.time()))
            self.set_state(job_id, status)
            job.append_log(ProgressEvent(job_id=job_id, stage=status, message=message))  # after the result, as run_job does

    def records(self) -> list[JobRecord]:
        out = []
        for p in self.root.iterdir():
            if JOB_ID.match(p.name) and (p / "state.json").exists():
                try:
                    out.append(self.record(p.name))
                except (OSError, ValueError, UnknownJob):
                    continue  # a job being deleted right now
        return sorted(out, key=lambda r: r.submitted_at)

    def delete(self, job_id: str) -> None:
        job = self.folder(job_id)
        trash = self.root / f".deleting-{job_id}"
        job.root.rename(trash)  # atomic: the job vanishes at once, the files go after
        shutil.rmtree(trash, ignore_errors=True)

    def recover(self) -> list[str]:
        """At start: drop half uploads, mark interrupted runs, return queued ids in submission order."""
        for p in self.root.iterdir():
            if p.name.startswith((".incoming-", ".deleting-")):
                shutil.rmtree(p, ignore_errors=True)
        queued = []
        for rec in self.records():
            if rec.state == "running":
                self.finish_without_running(
                    rec.job_id, "interrupted", "the server stopped while this job ran; resubmit it (POST /jobs/{id}/resubmit)"
                )
            elif rec.state == "queued":
                queued.append(rec.job_id)
        return queued

    def last_event(self, job_id: str) -> ProgressEvent | None:
        path = self.folder(job_id).log_path
        try:
            with path.open("rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 8192))
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            return None
        for line in reversed(lines):
            try:
                return ProgressEvent.model_validate_json(line)
            except ValueError:
                continue  # the first, cut line of the tail
        return None
