"""Running a rig job from Blender without freezing it (research/blender.md §5).

Main thread: ``tick()`` renders one view per call, then drains the worker's progress queue.
Worker thread: the backend's ``run_job`` on the job folder; it never touches bpy. Cancel stops
rendering at once (settings restored) or the sampler between two steps. In the GUI ``tick`` is a
``bpy.app.timers`` callback; tests and ``blender -b`` scripts pump it by hand or call ``run()``.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import bpy

from .export import export_photo_rig, finish_job, scene_objects, view_stems
from .paths import resolve_folder
from .render import ViewRenderer

TICK_S = 0.1


@dataclass
class JobStatus:
    state: str = "rendering"  # rendering, running, done, failed, cancelled
    stage: str = "rendering"
    fraction: float = 0.0
    message: str = ""
    eta_s: float | None = None
    result: dict | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


def backend_module(name: str):
    """``<extension>.backend.<name>``, wherever the extension is installed."""
    return importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend.{name}")


class RigError(ValueError):
    """What makes a rig job impossible, all of it at once, found before the first view renders."""


def check_before_rendering(scene, cameras, task: str, render: Sequence[bool], passes: bool, photos: bool, server, sections) -> list[str]:
    """Every problem with the cameras, the passes the task needs, the rig's size and (in-process) the
    weights, raised together as ``RigError``; returns notes worth showing (models that will download)."""
    from .cameras import camera_problems

    problems, notes = camera_problems(scene, cameras), []
    if task == "novel_views" and not photos and (len(cameras) < 2 or all(render)):
        problems.append("novel_views needs at least two cameras: the input view(s) and at least one view to generate")
    edit = sections.get("edit") or {}
    if task == "stylize" and not passes:
        kinds = [c.get("kind", "depth") for c in (edit.get("controls") or [{}])]
        need = [k for k in kinds if k in ("depth", "normal", "lineart")]
        if need:
            problems.append(f"the {', '.join(need)} ControlNet needs geometry passes, which a photo rig has not: use canny or tile")
    if server is None:
        needs = backend_module("model_needs")  # standard library only: fine in Blender's own Python
        try:
            missing = needs.missing_models(task, sections.get("models"), edit)
        except (KeyError, FileNotFoundError) as e:
            problems.append(str(e))
            missing = []
        if missing and needs.is_offline():
            problems.append(needs.missing_message(missing))
        elif missing:
            notes.append(f"first use downloads {', '.join(missing)}")
    if problems:
        raise RigError("cannot run this job: " + "; ".join(problems))
    return notes


class RigJob:
    def __init__(
        self,
        scene: bpy.types.Scene,
        cameras: Sequence[bpy.types.Object],
        folder: Path,
        task: str,
        render: Sequence[bool] | None = None,
        passes: bool = False,
        photos: bool = False,
        server: dict | None = None,
        prepared: bool = False,
        **sections,
    ) -> None:
        """``render`` marks the input views (default all); ``passes`` adds depth/normals/index for them.

        ``photos``: the inputs are the cameras' background photos (capture rigs); nothing is rendered.
        ``server``: {"url", "token"} to run the job on a server instead of in this process.
        ``prepared``: ``folder`` already holds the job (job.json + inputs, e.g. a spatial edit of a capture): just run it.
        """
        self.server, self.prepared = server, prepared
        self.scene, self.cameras, self.folder, self.task, self.sections = scene, list(cameras), resolve_folder(folder), task, sections
        if (self.folder / "job.json").exists() != prepared:
            raise FileExistsError(f"{self.folder} already holds a job; choose a new folder" if not prepared else f"no job.json in {folder}")
        self.photos = photos
        mask = [False] * len(self.cameras) if photos or prepared else (list(render) if render is not None else [True] * len(self.cameras))
        self.notes: list[str] = []
        if not prepared:  # a prepared job (a capture) was checked when it was made
            self.notes = check_before_rendering(scene, self.cameras, task, mask, passes, photos, server, sections)
        self.to_render = [c for c, r in zip(self.cameras, mask, strict=True) if r]
        stems = view_stems(self.cameras)
        self.names = [stems[c.name] for c in self.to_render]
        others = [(c, stems[c.name]) for c in self.cameras if c not in self.to_render and not (photos or prepared)]
        self.renderer = ViewRenderer(scene, self.to_render, self.folder / "inputs", self.names, passes, scene_objects(scene), others)
        self.status = JobStatus(message="; ".join([f"rendering 0/{self.renderer.total} views", *self.notes]))
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.perf_counter()

    # -- main thread ---------------------------------------------------------------------------
    def tick(self) -> float | None:
        """Advance; returns the delay until the next call, or None when finished (timer protocol).

        Never raises: an error (a failed render, a broken export) ends the job as failed, with the
        scene's settings restored and a result.json in the folder that says why."""
        if self.status.finished:
            return None
        try:
            return self._advance()
        except Exception as e:  # noqa: BLE001 - reported through the status and result.json
            return self._finish_failed(f"{type(e).__name__}: {e}")

    def _advance(self) -> float | None:
        st = self.status
        if st.state == "rendering":
            if self._cancel.is_set():
                return self._finish_cancelled()
            more = self.renderer.step()
            st.fraction = 0.1 * self.renderer.steps_done / max(self.renderer.total, 1)
            st.message = f"rendering {self.renderer.steps_done}/{self.renderer.total} views"
            if more:
                return 0.0
            self._start_worker()
            return TICK_S
        self._drain()
        if self._thread is not None and not self._thread.is_alive():
            self._drain()
            self._finish()
            return None
        return TICK_S

    def cancel(self) -> None:
        self._cancel.set()
        if self.status.state == "rendering":
            self._finish_cancelled()

    def run(self, poll_s: float = 0.05) -> JobStatus:
        """Blocking: for scripts and ``blender -b``."""
        while (delay := self.tick()) is not None:
            time.sleep(min(delay, poll_s))
        return self.status

    # -- helpers ---------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self.prepared:
            pass
        elif self.photos:
            export_photo_rig(self.scene, self.cameras, self.folder, self.task, **self.sections)
        else:
            finish_job(self.folder, self.scene, self.cameras, self.renderer, self.task, **self.sections)
        self.status.state, self.status.stage, self.status.message = "running", "loading", "starting the backend"
        if self.server is not None:  # over HTTP: no torch in this process
            client = backend_module("client")

            def work() -> None:
                url, token = self.server.get("url"), self.server.get("token")
                if "managed" in self.server:  # the backend environment's server, started on first use
                    m = self.server["managed"]
                    self._events.put(SimpleNamespace(stage="loading", step=0, total=0, message="starting the backend", eta_s=None))
                    try:
                        url, token = backend_module("server.launcher").ensure_managed_server(m["python"], m["jobs_dir"], m["env"])
                    except Exception as e:  # noqa: BLE001 - reported through result.json like any failure
                        self._write_result("failed", f"the backend environment's server did not start: {e}")
                        return
                c = client.Client(url, token)
                client.run_remote_job(c, self.folder, progress=self._events.put, should_cancel=self._cancel.is_set)

        else:
            jobs, runner = backend_module("jobs"), backend_module("runner")

            def work() -> None:
                runner.run_job(jobs.JobFolder(self.folder), progress=self._events.put, should_cancel=self._cancel.is_set)

        self._thread = threading.Thread(target=work, name="coupled-edit-job", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        st = self.status
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return
            st.stage = ev.stage
            if ev.stage == "sampling" and ev.total:
                st.fraction = max(st.fraction, 0.1 + 0.85 * ev.step / ev.total)  # the last 5 %: decode and write
            st.eta_s = ev.eta_s
            st.message = ev.message or ev.stage

    def _finish(self) -> None:
        import json

        result = json.loads((self.folder / "result.json").read_text(encoding="utf-8"))
        st = self.status
        st.result, st.state = result, result["status"] if result["status"] in ("done", "cancelled") else "failed"
        st.fraction = 1.0 if st.state == "done" else st.fraction
        st.message = {"done": f"done in {time.perf_counter() - self._started:.1f} s"}.get(st.state, result.get("error") or st.state)

    def _finish_cancelled(self) -> None:
        self.renderer.close()  # scene settings back as they were
        self.status.state, self.status.message = "cancelled", "cancelled while rendering"
        self._write_result("cancelled", "cancelled while rendering")
        return None

    def _finish_failed(self, message: str) -> None:
        try:
            self.renderer.close()
        finally:
            self.status.state, self.status.message = "failed", message
            if not (self.folder / "result.json").exists():
                self._write_result("failed", message)
        return None

    def _write_result(self, status: str, message: str) -> None:
        """The folder says how the job ended even when the backend never ran (docs/scripting.md)."""
        import json

        self.folder.mkdir(parents=True, exist_ok=True)
        result = {"job_id": self.folder.name, "status": status, "error": message, "outputs": [], "metadata": {}}
        tmp = self.folder / ".result.json.part"
        tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
        tmp.replace(self.folder / "result.json")
        self.status.result = result
