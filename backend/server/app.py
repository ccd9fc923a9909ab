"""The FastAPI app: submit, follow, cancel, fetch and delete jobs; models; health.

Every route but ``/health`` needs ``Authorization: Bearer <token>`` when the server has a token
(compared in constant time). Limits answer with a 4xx that says which limit and what to do.
"""

import asyncio
import hmac
import json
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .. import __version__
from ..input_files import InputFileError
from ..input_files import inspect as inspect_file
from ..jobs import FILE_NAME, MAX_SIDE, MAX_VIEWS, SCHEMA_VERSION, JobResult, JobSpecError, parse_spec
from ..runner import scrub_paths
from .store import FINAL, JobStore, UnknownJob
from .worker import Worker

CHUNK = 1 << 20
# A job that runs anywhere in seconds (tiny random Flux): the OpenAPI example of a submission.
EXAMPLE_SPEC = json.dumps(
    {
        "task": "couple_images",
        "edit": {"prompts": ["a red cube", "a blue cube"]},
        "models": {"generator": "flux-tiny"},
        "sampling": {"steps": 2},
        "output": {"width": 32, "height": 32},
    }
)
MAX_PATH_CHARS = 1000


@dataclass
class Limits:
    max_request_bytes: int = 2 << 30  # a whole submission
    max_file_bytes: int = 512 << 20  # one uploaded file
    max_files: int = 5 * MAX_VIEWS + 8  # image, alpha, depth, normal, index per view + extras
    max_queue: int = 32
    max_side: int = MAX_SIDE
    max_image_pixels: int = MAX_SIDE * MAX_SIDE  # one decoded image or array, whatever its file name says
    max_job_pixels: int = 1 << 30  # all decoded inputs of one job together (about 4 GB as 8-bit RGBA)


# --- response bodies (they make the OpenAPI schema) ---------------------------------------------


class Health(BaseModel):
    status: str = Field("ok", description="ok, or worker-dead (restart the server: no job will run)")
    worker_alive: bool = True
    worker_error: str | None = Field(None, description="why the worker stopped, when it did")
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


class Error(BaseModel):
    """Every 4xx answer: one message that says what was wrong and what to do."""

    detail: str


def errors(*codes: int) -> dict:
    """OpenAPI entries for the 4xx a route sends; every route behind the token can answer 400, 401, 413 and 422."""
    text = {400: "bad request", 401: "missing or wrong token", 404: "no such job or file", 409: "not in a state that allows it",
            413: "over a size limit", 422: "invalid parameters or job spec", 429: "the queue is full"}  # fmt: skip
    return {c: {"model": Error, "description": text[c]} for c in sorted({400, 401, 413, 422, *codes})}


class Released(BaseModel):
    released: bool = Field(description="true: freed now; false: freed when the running job ends")


def _err(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


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
        seen, started, over = 0, False, False
        message = f"request body over the server's limit of {self.max} bytes; send fewer or smaller files"

        async def limited():
            # Over the limit, the app is told the client left: whatever it answers then (FastAPI turns a
            # broken body into 400) is replaced by the 413 below.
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max:
                    over = True
                    return {"type": "http.disconnect"}
            return msg

        async def watch(msg):
            nonlocal started
            if over:
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, message)
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, watch)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _send_json(send, 413, message)


async def _send_json(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class RayOptions:
    """Serve on a Ray cluster (``backend.cluster``): its address ("auto": the running cluster, "local": one
    inside this process), actors (default: one per GPU, or per node without GPUs), and how often a job
    lost with its actor is retried."""

    address: str = "auto"
    actors: int | None = None
    retries: int = 1


def create_app(jobs_dir: str | Path, token: str | None = None, limits: Limits | None = None, ray: RayOptions | None = None) -> FastAPI:
    limits = limits or Limits()
    store = JobStore(jobs_dir)
    if ray is None:
        worker = Worker(store, limits.max_queue)
    else:
        from ..cluster.dispatch import RayWorker

        worker = RayWorker(store, limits.max_queue, ray.address, ray.actors, ray.retries)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start(store.recover())
        yield
        worker.stop()

    app = FastAPI(
        docs_url=None,  # served below, behind the token like everything but /health
        redoc_url=None,
        openapi_url=None,
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
        alive = worker.alive
        return Health(status="ok" if alive else "worker-dead", worker_alive=alive, worker_error=None if alive else worker.death,
                      version=__version__, schema_version=SCHEMA_VERSION, busy=worker.current is not None, queued=worker.queued(),
                      auth=token is not None)  # fmt: skip

    @app.post("/jobs", response_model=JobStatus, status_code=201, tags=["jobs"], dependencies=[Depends(auth)], responses=errors(429))
    async def submit(
        spec: Annotated[
            str, Form(min_length=2, description="the JobSpec as a JSON object (docs/job_spec.schema.json)", examples=[EXAMPLE_SPEC])
        ],
        files: Annotated[list[UploadFile], File(description="inputs the spec names (file name = the name in the spec)")] = [],  # noqa: B006
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
            if not FILE_NAME.fullmatch(n) or ".." in n:
                raise _err(400, f"file name {n[:80]!r} not allowed: use a plain name (letters, digits, '.', '_', '-', ' '), no folders")
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise _err(400, f"file names given twice: {dups}")
        job_id, tmp = store.incoming()
        try:
            inputs = store.upload_dir(tmp)
            inputs.mkdir(parents=True)
            pixels = 0
            for f in files:
                pixels += await _save(f, inputs / f.filename, limits)
                if pixels > limits.max_job_pixels:
                    msg = f"the job's images decode to more than {limits.max_job_pixels} pixels in all; send fewer or smaller views"
                    raise _err(413, msg)
            job = await asyncio.to_thread(store.commit, job_id, tmp, parsed)
            worker.enqueue(job.job_id)
        except OverflowError as e:
            store.delete(job_id)
            raise _err(429, str(e)) from None
        except HTTPException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (FileNotFoundError, ValueError) as e:  # a named input missing, a pass of the wrong size
            shutil.rmtree(tmp, ignore_errors=True)
            raise _err(400, scrub_paths(str(e), tmp / "job")) from None
        return status_of(job_id)

    @app.get("/jobs", response_model=JobList, tags=["jobs"], dependencies=[Depends(auth)], responses=errors())
    def list_jobs() -> JobList:
        return JobList(jobs=[status_of(r.job_id) for r in store.records()])

    @app.get("/jobs/{job_id}", response_model=JobStatus, tags=["jobs"], dependencies=[Depends(auth)], responses=errors(404))
    def job_status(job_id: str) -> JobStatus:
        return status_of(job_id)

    @app.get(
        "/jobs/{job_id}/events",
        tags=["jobs"],
        dependencies=[Depends(auth)],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "server-sent events: one ProgressEvent per 'data:'"},
            **errors(404),
        },
    )
    async def events(job_id: str, since: Annotated[int, Query(ge=0, description="skip the first N events (resume)")] = 0):
        record_or_404(job_id)
        log = store.folder(job_id).log_path

        async def stream():
            # Ends on a finished record (result.json written) once its final event is read; the
            # final event is logged after the result, so a short grace covers the gap between them.
            n, idle, buf, pos = 0, 0.0, b"", 0
            final_seen, finished_for = False, 0.0
            while True:
                finished = _finished(store, job_id)  # before reading: what was logged by then is read below
                try:
                    with log.open("rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                except OSError:
                    return  # deleted
                pos += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    if n >= since:
                        yield f"id: {n}\nevent: progress\ndata: {line.decode()}\n\n"
                    n += 1
                    final_seen = final_seen or json.loads(line).get("stage") in FINAL
                finished_for = finished_for + 0.2 if finished else 0.0
                if finished and (final_seen or finished_for > 2.0):
                    yield "event: end\ndata: {}\n\n"
                    return
                idle = 0.0 if lines else idle + 0.2
                if idle >= 2.0:  # keep-alives also let a client check for cancel
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/jobs/{job_id}/cancel", response_model=JobStatus, tags=["jobs"], dependencies=[Depends(auth)], responses=errors(404))
    def cancel(job_id: str) -> JobStatus:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            worker.cancel(job_id)
        return status_of(job_id)

    @app.post(
        "/jobs/{job_id}/resubmit",
        response_model=JobStatus,
        status_code=201,
        tags=["jobs"],
        dependencies=[Depends(auth)],
        responses=errors(404, 409, 429),
    )
    def resubmit(job_id: str) -> JobStatus:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            raise _err(409, f"job {job_id} is {rec.state}; resubmit a finished, failed, cancelled or interrupted job")
        if worker.queue_full():
            raise _err(429, f"the queue is full ({limits.max_queue} jobs waiting); try again when one has finished")
        old = store.folder(job_id)
        new_id, tmp = store.incoming()
        try:
            shutil.copytree(old.inputs, store.upload_dir(tmp))
            job = store.commit(new_id, tmp, old.spec())
        except (OSError, ValueError) as e:  # a job folder edited or damaged on disk since it ran
            shutil.rmtree(tmp, ignore_errors=True)
            raise _err(409, f"job {job_id} cannot be resubmitted: {scrub_paths(str(e), old.root)}") from None
        worker.enqueue(job.job_id, force=True)
        return status_of(new_id)

    @app.get("/jobs/{job_id}/result", response_model=JobResult, tags=["jobs"], dependencies=[Depends(auth)], responses=errors(404, 409))
    def result(job_id: str) -> JobResult:
        rec = record_or_404(job_id)
        res = store.folder(job_id).result()
        if res is None:
            raise _err(409, f"job {job_id} is {rec.state}; its result exists once it has finished")
        return res

    @app.get(
        "/jobs/{job_id}/files/{path:path}",
        tags=["jobs"],
        dependencies=[Depends(auth)],
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}, **errors(404)},
    )
    def output_file(job_id: str, path: str):
        record_or_404(job_id)
        job = store.folder(job_id)
        missing = _err(404, f"no output file {path[:200]!r} in job {job_id} (files are under outputs/, listed in the result)")
        if "\0" in path or len(path) > MAX_PATH_CHARS:
            raise missing
        try:
            target = (job.root / path).resolve()
            ok = job.outputs.resolve() in target.parents and target.is_file()
        except (OSError, ValueError):  # a name too long for the file system
            ok = False
        if not ok:
            raise missing
        return FileResponse(target)

    @app.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], dependencies=[Depends(auth)], responses=errors(404, 409))
    def delete(job_id: str) -> None:
        rec = record_or_404(job_id)
        if rec.state not in FINAL:
            raise _err(409, f"job {job_id} is {rec.state}; cancel it first")
        store.delete(job_id)

    @app.get("/models", response_model=list[ModelInfo], tags=["models"], dependencies=[Depends(auth)], responses=errors())
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

    @app.post("/models/release", response_model=Released, tags=["models"], dependencies=[Depends(auth)], responses=errors())
    def release() -> Released:
        return Released(released=worker.release_models())

    @app.exception_handler(UnknownJob)
    async def unknown(_: Request, exc: UnknownJob):
        return JSONResponse({"detail": f"no job {exc.args[0]!r} on this server"}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # say which methods the path has (RFC 9110 requires Allow on 405)
            methods = set()
            for route in app.router.routes:
                match, _ = route.matches(request.scope)
                if match is Match.PARTIAL and getattr(route, "methods", None):
                    methods |= route.methods
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        # the same body as every other 4xx ({"detail": "..."}), one 'where: problem' per line
        lines = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'request'}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return JSONResponse({"detail": "invalid request:\n  " + "\n  ".join(lines)}, status_code=422)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(auth)])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(auth)])
    def swagger():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(auth)])
    def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title=app.title)

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    return app


def _finished(store: JobStore, job_id: str) -> bool:
    try:
        return store.record(job_id).state in FINAL
    except UnknownJob:
        return True


async def _save(upload: UploadFile, dest: Path, limits: Limits) -> int:
    """Copy one upload to disk in chunks under the per-file limit; return its decoded pixel count.

    What a file is comes from its content (``backend.input_files``), never its name: every image,
    EXR, HDR or .npy is held to the pixel limits before anything decodes it."""
    size = 0
    with dest.open("wb") as out:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limits.max_file_bytes:
                raise _err(413, f"file {upload.filename!r} is over the limit of {limits.max_file_bytes} bytes")
            out.write(chunk)
    try:
        info = await asyncio.to_thread(inspect_file, dest, upload.filename)
    except InputFileError as e:
        raise _err(400, str(e)) from None
    if not info.is_raster:
        return 0
    if max(info.width, info.height) > limits.max_side:
        raise _err(413, f"image {upload.filename!r} is {info.width}x{info.height}; the largest side allowed is {limits.max_side} px")
    if info.pixels > limits.max_image_pixels:
        raise _err(413, f"image {upload.filename!r} decodes to {info.pixels} pixels; the limit is {limits.max_image_pixels} per file")
    return info.pixels


def openapi_schema() -> dict:
    """The served OpenAPI document (kept in docs/server_openapi.json by a test)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return create_app(d).openapi()
