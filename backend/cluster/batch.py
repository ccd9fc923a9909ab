"""``python -m backend ray-batch JOBS_DIR``: every job folder in a folder, run on a Ray cluster.

Each ``JOBS_DIR/<name>/`` (job.json + inputs/, as ``run-job`` takes) is staged into a job store
(``JOBS_DIR/.ray-batch/``), run by the same dispatcher as ``serve --ray``, and its outputs/,
result.json and log are copied back into ``JOBS_DIR/<name>/``. Finished folders (a result.json) are
skipped unless ``rerun``, so a batch cut short goes on where it stopped. Prints a progress bar and a
summary; the exit status is 0 only when every job ended ``done``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from ..jobs import JobFolder
from ..server.store import FINAL, JobStore
from .dispatch import RayWorker


def job_folders(jobs_dir: Path) -> list[Path]:
    return sorted(p for p in jobs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "job.json").is_file())


def run_batch(jobs_dir: Path, address: str, actors: int | None = None, retries: int = 1, rerun: bool = False, out=sys.stdout) -> int:
    if not jobs_dir.is_dir():
        raise FileNotFoundError(f"{jobs_dir} is not a folder; give a folder of job folders (job.json + inputs/ each)")
    folders = job_folders(jobs_dir)
    todo = [f for f in folders if rerun or not (f / "result.json").exists()]
    if not folders:
        print(f"no job folders (with a job.json) in {jobs_dir}", file=out)
        return 2
    staging = jobs_dir / ".ray-batch"
    shutil.rmtree(staging, ignore_errors=True)
    store = JobStore(staging)
    ids: dict[str, Path] = {}
    for f in todo:
        job_id, tmp = store.incoming()
        if (f / "inputs").is_dir():
            shutil.copytree(f / "inputs", store.upload_dir(tmp))
        store.commit(job_id, tmp, JobFolder(f).spec())
        ids[job_id] = f
    skipped = len(folders) - len(todo)
    print(f"{len(todo)} of {len(folders)} jobs to run ({skipped} finished before) on Ray at {address}", file=out, flush=True)
    if not ids:
        return 0
    worker = RayWorker(store, max_queue=max(1, len(ids)), address=address, actors=actors, retries=retries)
    t0 = time.perf_counter()
    worker.start(list(ids))
    print(f"{len(worker.actors())} actors", file=out, flush=True)
    finished: dict[str, str] = {}
    try:
        while len(finished) < len(ids):
            for job_id, f in ids.items():
                if job_id not in finished and (state := store.record(job_id).state) in FINAL:
                    finished[job_id] = state
                    _copy_back(store.folder(job_id), f)
            _bar(len(finished), len(ids), time.perf_counter() - t0, out)
            time.sleep(0.5)
    finally:
        worker.stop()
    print(file=out)
    return _summary(ids, store, time.perf_counter() - t0, out)


def _copy_back(job: JobFolder, dest: Path) -> None:
    """outputs/, log, traceback and (last) result.json into the user's job folder."""
    if (dest / "outputs").exists():
        shutil.rmtree(dest / "outputs")
    shutil.copytree(job.outputs, dest / "outputs")
    for name in ("log", "traceback.txt"):
        if (job.root / name).exists():
            shutil.copyfile(job.root / name, dest / name)
    shutil.copyfile(job.result_path, dest / "result.json")


def _bar(done: int, total: int, elapsed: float, out) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    eta = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs, {elapsed:.0f} s{eta}   ", end="", file=out, flush=True)


def _summary(ids: dict[str, Path], store: JobStore, elapsed: float, out) -> int:
    rows, counts = [], {}
    for job_id, f in ids.items():
        res = store.folder(job_id).result()
        counts[res.status] = counts.get(res.status, 0) + 1
        took = f"{res.finished_at - res.started_at:.1f} s" if res.started_at and res.finished_at else "-"
        rows.append(f"  {f.name:<32} {res.status:<12} {took:>9}  {(res.error or '')[:80]}")
    print("\n".join(rows), file=out)
    print(f"{len(ids)} jobs in {elapsed:.1f} s: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out, flush=True)
    return 0 if counts.get("done", 0) == len(ids) else 1
