"""The FastAPI app: submit, follow, cancel, fetch and delete jobs; models; health.

Every route but ``/health`` needs ``Authorization: Bearer <token>`` when the server has a token
(compared in constant time). Limits answer with a 4xx that says which limit and what to do.
"""

import asyncio
import hmac
import json
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from .. import __version__
from ..jobs import MAX_SIDE, MAX_VIEWS, SCHEMA_VERSION, JobResult, JobSpecError, parse_spec
from .store import FINAL, JobStore, UnknownJob
from .worker import Worker

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CHUNK = 1 << 20


@dataclass
class Limits:
    max_request_bytes: int = 2 << 30  # a whole submission
    max_file_bytes: int = 512 << 20  # one uploaded file
    max_files: int = 5 * MAX_VIEWS + 8  # image, alpha, depth, normal, index per view + extras
    max_queue: int = 32
    max_side: int = MAX_SIDE


# --- response bodies (they make the OpenAPI schema) ---------------------------------------------


class Health(BaseModel):
    status: str = "ok"
    version: str
    schema_version: int
    busy: bool
    queued: int
    auth: bool = Field(description="whether routes other than /health need the token")


class Progress(BaseModel):
    stage: str
    step: int
    total: int
    message: str
    elapsed_s: float
    eta_s: float | None


class JobStatus(BaseModel):
    job_id: str
    task: str
    state: str = Field(description="queued, running, done, failed, cancelled, interrupted")
    submitted_at: float
    queue_position: int | None = Field(None, description="1 = next to run; None when not waiting")
    progress: Progress | None = None
    result: JobResult | None = None


class JobList(BaseModel):
    jobs: list[JobStatus]


class ModelInfo(BaseModel):
    key: str
    kind: str
    repo: str | None
    present: bool
    licence: str
    gated: bool
    tasks: list[str]


class Released(BaseModel):
    released: bool = Field(description="true: freed now; false: freed when the running job ends")


def _err(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Rejects request bodies over the limit with 413 before (Content-Length) or while reading them."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_json(send, 400, "Content-Length must be a number")
            if int(length) > self.max:
                return await _send_json(send, 413, f"request body over the server's limit of {self.max} bytes; send fewer or smaller files")
        seen, started = 0, False

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max:
                    raise _TooLarge
            return msg

        async def watch(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, watch)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, f"request body over the server's limit of {self.max} bytes; send fewer or smaller files")


async def _send_json(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def create_app(jobs_dir: str | Path, token: str | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    store = JobStore(jobs_dir)
    worker = Worker(store, limits.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start(store.recover())
        yield
        worker.stop()

    app = FastAPI(
        title="Coupled Edit backend",
        version=__version__,
        description="Multi-view editing jobs (JobSpec in, JobResult and progress events out) on one GPU worker.",
        lifespan=lifespan,
    )
    app.state.store, app.state.worker = store, worker
    bearer = HTTPBearer(auto_error=False, description="the token the server was started with")

    def auth(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        given = cred.credentials if cred is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})

    def record_or_404(job_id: str):
        try:
            return store.record(job_id)
        except UnknownJob:
            raise _err(404, f"no job {job_id!r} on this server (it may have been deleted)") from None

    def status_of(job_id: str) -> JobStatus:
        rec = record_or_404(job_id)
        ev = store.last_event(job_id)
        progress = Progress(**ev.model_dump(include=set(Progress.model_fields))) if ev is not None else None
        result = store.folder(job_id).result() if rec.state in FINAL else None
        return JobStatus(
            job_id=job_id, task=rec.task, state=rec.state, submitted_at=rec.submitted_at,
            queue_position=worker.position(job_id), progress=progress, result=result,
        )  # fmt: skip

    @app.get("/health", response_model=Health, tags=["server"])
    def health() -> Health:
        return Health(version=__version__, schema_version=SCHEMA_VERSION, busy=worker.current is not None, queued=worker.queued(),
                      auth=token is not None)  # fmt: skip

    @app.post("/jobs", response_model=JobStatus, status_code=201, tags=["jobs"], dependencies=[Depends(auth)])
    async def submit(
        spec: Annotated[str, Form(description="the JobSpec as JSON")],
        files: Annotated[list[UploadFile] | None, File(description="inputs the spec names (file name = the name in the spec)")] = None,
    ) -> JobStatus:
        files = files or []
        try:
            parsed = parse_spec(spec)
        except JobSpecError as e:
            raise _err(422, str(e)) from None
        if len(files) > limits.max_files:
            raise _err(413, f"{len(files)} files over the limit of {limits.max_files}")
        if worker.queue_full():
            raise _err(429, f"the queue is full ({limits.max_queue} jobs waiting); try again when one has finished")
        names = [f.filename or "" for f in files]
        for n in names:
            if not SAFE_NAME.match(n) or n in (".", "..") or ".." in n:
                raise _err(400, f"file name {n!r} not allowed: use a plain name (letters, digits, '.', '_', '-', ' '), no folders")
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise _err(400, f"file names given twice: {dups}")
        job_id, tmp = store.incoming()
        try:
            inputs = store.upload_dir(tmp)
            inputs.mkdir(parents=True)
            for f in files:
                await _save(f, inputs / f.filename, limits)
            job = await asyncio.to_thread(store.commit, job_id, tmp, parsed)
            worker.enqueue(job.job_id)
        except OverflowError as e:
            store.delete(job_id)
            raise _err(429, str(e)) from None
        except HTTPException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (FileNotFoundError, ValueError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _err(400, str(e)) from None
        return status_of(job_id)

    @app.get("/jobs", response_model=JobList, tags=["jobs"], dependencies=[Depends(auth)])
    def list_jobs() -> JobList:
        return JobList(jobs=[status_of(r.job_id) for r in store.records()])

    @app.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], dependencies=[Depends(auth)])
    def job_status(job_id: str) -> JobStatus:
        return status_of(job_id)

    @app.get(
        "/jobs/{job_id}/events",
        tags=["jobs"],
        dependencies=[Depends(auth)],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events: one ProgressEvent per 'data:'"}},
    )
    async def events(job_id: str, since: Annotated[int, Query(ge=0, description="skip the first N events (resume)")] = 0):
        record_or_404(job_id)
        log = store.folder(job_id).log_path

        async def stream():
            n, idle, buf = 0, 0.0, b""
            pos = 0
            while True:
                try:
                    with log.open("rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                except OSError:
                    return  # deleted
                pos += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                final = False
                for line in lines:
                    if not line.strip():
                        continue
                    if n >= since:
                        yield f"id: {n}\nevent: progress\ndata: {line.decode()}\n\n"
                    n += 1
                    final = final or json.loads(line).get("stage") in ("done", "failed", "cancelled", "interrupted")
                if final or (not lines and _finished(store, job_id)):
                    yield "event: end\ndata: {}\n\n"
                    return
                idle = 0.0 if lines else idle + 0.2
                if idle >= 2.0:  # keep-alives also let a client check for cancel
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/jobs/{job_id}/cancel", response_model=JobStatus, tags=["jobs"], dependencies=[Depends(auth)])
    def cancel(job_id: str) -> JobStatus:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            worker.cancel(job_id)
        return status_of(job_id)

    @app.post("/jobs/{job_id}/resubmit", response_model=JobStatus, status_code=201, tags=["jobs"], dependencies=[Depends(auth)])
    def resubmit(job_id: str) -> JobStatus:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            raise _err(409, f"job {job_id} is {rec.state}; resubmit a finished, failed, cancelled or interrupted job")
        if worker.queue_full():
            raise _err(429, f"the queue is full ({limits.max_queue} jobs waiting); try again when one has finished")
        old = store.folder(job_id)
        new_id, tmp = store.incoming()
        shutil.copytree(old.inputs, store.upload_dir(tmp))
        job = store.commit(new_id, tmp, old.spec())
        worker.enqueue(job.job_id, force=True)
        return status_of(new_id)

    @app.get("/jobs/{job_id}/result", response_model=JobResult, tags=["jobs"], dependencies=[Depends(auth)])
    def result(job_id: str) -> JobResult:
        rec = record_or_404(job_id)
        res = store.folder(job_id).result()
        if res is None:
            raise _err(409, f"job {job_id} is {rec.state}; its result exists once it has finished")
        return res

    @app.get("/jobs/{job_id}/files/{path:path}", tags=["jobs"], dependencies=[Depends(auth)], response_class=FileResponse)
    def output_file(job_id: str, path: str):
        record_or_404(job_id)
        job = store.folder(job_id)
        target = (job.root / path).resolve()
        if job.outputs.resolve() not in target.parents or not target.is_file():
            raise _err(404, f"no output file {path!r} in job {job_id} (files are under outputs/, listed in the result)")
        return FileResponse(target)

    @app.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], dependencies=[Depends(auth)])
    def delete(job_id: str) -> None:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            raise _err(409, f"job {job_id} is {rec.state}; cancel it first")
        store.delete(job_id)

    @app.get("/models", response_model=list[ModelInfo], tags=["models"], dependencies=[Depends(auth)])
    def models() -> list[ModelInfo]:
        from ..models.weights import in_cache
        from ..registry import MODELS, TASK_MODELS

        keys = sorted({k for ks in TASK_MODELS.values() for k in ks})
        return [
            ModelInfo(
                key=k,
                kind=MODELS[k].kind,
                repo=MODELS[k].repo,
                present=in_cache(MODELS[k]),
                licence=MODELS[k].licence,
                gated=MODELS[k].gated,
                tasks=[t for t, ks in TASK_MODELS.items() if k in ks],
            )  # fmt: skip
            for k in keys
        ]

    @app.post("/models/release", response_model=Released, tags=["models"], dependencies=[Depends(auth)])
    def release() -> Released:
        return Released(released=worker.release_models())

    @app.exception_handler(UnknownJob)
    async def unknown(_: Request, exc: UnknownJob):
        return JSONResponse({"detail": f"no job {exc.args[0]!r} on this server"}, status_code=404)

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    return app


def _finished(store: JobStore, job_id: str) -> bool:
    try:
        return store.record(job_id).state in FINAL
    except UnknownJob:
        return True


async def _save(upload: UploadFile, dest: Path, limits: Limits) -> None:
    """Copy one upload to disk in chunks, enforcing the per-file limit; check image headers."""
    size = 0
    with dest.open("wb") as out:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limits.max_file_bytes:
                raise _err(413, f"file {upload.filename!r} is over the limit of {limits.max_file_bytes} bytes")
            out.write(chunk)
    if dest.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(dest) as im:  # reads the header only
                w, h = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise _err(400, f"file {upload.filename!r} is not a readable image: {e}") from None
        if max(w, h) > limits.max_side:
            raise _err(413, f"image {upload.filename!r} is {w}x{h}; the largest side allowed is {limits.max_side} px")


def openapi_schema() -> dict:
    """The served OpenAPI document (kept in docs/server_openapi.json by a test)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return create_app(d).openapi()
