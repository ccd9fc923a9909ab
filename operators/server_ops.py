"""Start and stop a local job server from Blender (the backend's launcher; no torch in Blender)."""

import importlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import bpy

from .. import preferences

SERVER: dict = {}  # "proc", "log", "url" of the server this Blender started


def _backend(name: str):
    return importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend.{name}")


def stop_local_server() -> int | None:
    proc = SERVER.pop("proc", None)
    if proc is None:
        return None
    return _backend("server.launcher").stop_server(proc)


class COUPLED_EDIT_OT_start_server(bpy.types.Operator):
    bl_idname = "coupled_edit.start_server"
    bl_label = "Start Server"
    bl_description = "Start a job server on this computer with the configured Python and wait until it answers"

    def execute(self, context):
        prefs = preferences.get(context)
        launcher = _backend("server.launcher")
        url = urlparse(prefs.server_url.strip())
        if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
            self.report({"ERROR"}, "Start Server runs a server on this computer: set Server to http://127.0.0.1:<port>")
            return {"CANCELLED"}
        if SERVER.get("proc") is not None and SERVER["proc"].poll() is None:
            self.report({"INFO"}, f"the server started here is already running at {SERVER['url']}")
            return {"FINISHED"}
        jobs = os.path.join(tempfile.gettempdir(), "coupled_edit_server")
        if prefs.server_jobs_dir:
            jobs = bpy.path.abspath(prefs.server_jobs_dir)
        Path(jobs).mkdir(parents=True, exist_ok=True)
        log = Path(jobs) / "server.log"
        python = bpy.path.abspath(prefs.server_python) if prefs.server_python else None
        try:
            env = {"HF_HOME": bpy.path.abspath(prefs.model_cache)} if prefs.model_cache else {}
            env |= {"HF_HUB_OFFLINE": "1"} if prefs.offline else {}
            proc = launcher.start_local_server(python, url.port, jobs, prefs.server_token or None, log, env)
            base = f"http://127.0.0.1:{url.port}"
            health = launcher.wait_healthy(base, 120, proc, log)
        except (OSError, RuntimeError, TimeoutError) as e:
            self.report({"ERROR"}, f"the server did not start: {e}")
            return {"CANCELLED"}
        SERVER.update(proc=proc, log=log, url=base)
        self.report({"INFO"}, f"server {health['version']} running at {base} (log: {log})")
        return {"FINISHED"}


class COUPLED_EDIT_OT_stop_server(bpy.types.Operator):
    bl_idname = "coupled_edit.stop_server"
    bl_label = "Stop Server"
    bl_description = "Stop the job server started from this Blender session (finished results stay in its jobs folder)"

    def execute(self, context):
        code = stop_local_server()
        self.report({"INFO"}, "no server was started from this session" if code is None else f"server stopped (exit code {code})")
        return {"FINISHED"}
