"""Start and stop a local job server from Blender (the backend's launcher; no torch in Blender)."""

import importlib
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import bpy

from .. import preferences
from . import stepwise

SERVER: dict = {}  # "proc", "log", "url" of the server this Blender started


def _backend(name: str):
    return importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend.{name}")


def backend_process_env(context) -> dict[str, str]:
    """The environment of a ``python -m backend ...`` child: this process's, the hub settings of the
    preferences (the token only ever travels this way) and the add-on's folder on the import path."""
    import os

    launcher = _backend("server.launcher")
    return {**os.environ, **preferences.hub_env(context), "PYTHONPATH": str(launcher.PACKAGE_ROOT), "PYTHONUNBUFFERED": "1"}


def stop_local_server() -> int | None:
    proc = SERVER.pop("proc", None)
    if proc is None:
        return None
    return _backend("server.launcher").stop_server(proc)


class ServerStart:
    """A local server starting, checked once per ``step()`` (Blender stays responsive meanwhile)."""

    def __init__(self, context, timeout: float = 120.0) -> None:
        launcher = _backend("server.launcher")
        prefs = preferences.get(context)
        url = urlparse(prefs.server_url.strip())
        if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
            raise ValueError("Start Server runs a server on this computer: set Server to http://127.0.0.1:<port>")
        jobs = Path(tempfile.gettempdir()) / "coupled_edit_server"
        if prefs.server_jobs_dir:
            jobs = Path(bpy.path.abspath(prefs.server_jobs_dir))
        jobs.mkdir(parents=True, exist_ok=True)
        self.log = jobs / "server.log"
        python = bpy.path.abspath(prefs.server_python) if prefs.server_python else None
        self.proc = launcher.start_local_server(python, url.port, jobs, prefs.server_token or None, self.log, preferences.hub_env(context))
        self.url, self.timeout, self.t0 = f"http://127.0.0.1:{url.port}", timeout, time.monotonic()
        self.health: dict | None = None
        self.fraction, self.message = 0.0, "starting the server"

    def step(self) -> bool:
        import requests

        elapsed = time.monotonic() - self.t0
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"the server exited with code {self.proc.returncode} before it was ready (log {self.log}):\n{tail}")
        try:
            r = requests.get(self.url + "/health", timeout=0.5)
            if r.ok:
                self.health, self.fraction = r.json(), 1.0
                SERVER.update(proc=self.proc, log=self.log, url=self.url)
                return False
        except requests.RequestException:
            pass
        if elapsed > self.timeout:
            self.cancel()
            raise TimeoutError(f"no answer from {self.url}/health within {self.timeout:.0f} s (log {self.log})")
        self.fraction = min(0.95, elapsed / 30.0)  # loading torch takes most of it
        self.message = f"starting the server ({elapsed:.0f} s)"
        time.sleep(0.05)  # execute() loops on step(); the timer path sleeps between ticks anyway
        return True

    def cancel(self) -> None:
        _backend("server.launcher").stop_server(self.proc)


class COUPLED_EDIT_OT_start_server(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.start_server"
    bl_label = "Start Server"
    bl_description = "Start a job server on this computer with the configured Python and wait until it answers"

    def invoke(self, context, event):
        if self._already_running():
            return {"FINISHED"}
        return super().invoke(context, event)

    def execute(self, context):
        if self._already_running():
            return {"FINISHED"}
        return super().execute(context)

    def _already_running(self) -> bool:
        if SERVER.get("proc") is not None and SERVER["proc"].poll() is None:
            self.report({"INFO"}, f"the server started here is already running at {SERVER['url']}")
            return True
        return False

    def start(self, context):
        return ServerStart(context)

    def finished(self, context, task):
        self.report({"INFO"}, f"server {task.health['version']} running at {task.url} (log: {task.log})")
        return {"FINISHED"}


class COUPLED_EDIT_OT_setup_backend(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.setup_backend"
    bl_label = "Set Up Backend"
    bl_description = (
        "Create the add-on's own Python environment with torch for this computer and the backend's packages "
        "(a few GB; no admin rights; Blender's Python is not touched). Run again to update or retry"
    )

    def start(self, context):
        envsetup = _backend("envsetup")
        prefs = preferences.get(context)
        _backend("server.launcher").stop_managed_server()  # it runs from the environment being changed
        return envsetup.EnvSetup(preferences.env_root(context), preferences.torch_choice(context), prefs.setup_tool,
                                 extra_env=preferences.hub_env(context))  # fmt: skip

    def finished(self, context, task):
        self.report({"INFO"}, f"backend environment {task.message} (log: {task.log_path})")
        return {"FINISHED"}


class COUPLED_EDIT_OT_remove_backend(bpy.types.Operator):
    bl_idname = "coupled_edit.remove_backend"
    bl_label = "Remove Backend"
    bl_description = "Delete the backend environment (models in the hub cache stay)"

    def execute(self, context):
        _backend("server.launcher").stop_managed_server()
        try:
            removed = _backend("envsetup").remove_env(preferences.env_root(context))
        except (OSError, RuntimeError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, "backend environment removed" if removed else "no backend environment to remove")
        return {"FINISHED"}


class COUPLED_EDIT_OT_stop_server(bpy.types.Operator):
    bl_idname = "coupled_edit.stop_server"
    bl_label = "Stop Server"
    bl_description = "Stop the job server started from this Blender session (finished results stay in its jobs folder)"

    def execute(self, context):
        code = stop_local_server()
        self.report({"INFO"}, "no server was started from this session" if code is None else f"server stopped (exit code {code})")
        return {"FINISHED"}
