"""Tell the artist whether the models can run inside Blender or need the server."""

import importlib
import importlib.util

import bpy

from .. import preferences
from .server_ops import backend_process_env

REQUIRED = ("torch", "diffusers", "transformers", "safetensors", "pydantic")


def missing_modules() -> list[str]:
    """Modules the in-process backend needs that this Python cannot import."""
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


class COUPLED_EDIT_OT_check_backend(bpy.types.Operator):
    bl_idname = "coupled_edit.check_backend"
    bl_label = "Check Backend"
    bl_description = "Check whether the diffusion models can run inside Blender or need the server"

    def execute(self, context):
        if preferences.get(context).backend == "ENVIRONMENT":
            return self._environment(context)
        srv = preferences.server(context)
        if srv is not None:
            client = importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend.client")
            try:
                h = client.Client(srv["url"], srv["token"], timeout=5, retries=0).check_version()
                client.Client(srv["url"], srv["token"], timeout=5, retries=0).jobs()  # the token is checked here
            except client.ServerError as e:
                self.report({"WARNING"}, str(e))
                return {"FINISHED"}
            self.report({"INFO"}, f"Server {h['version']} at {srv['url']} ready ({'busy' if h['busy'] else 'idle'}, {h['queued']} queued)")
            return {"FINISHED"}
        missing = missing_modules()
        if missing:
            self.report({"WARNING"}, f"In-process backend unavailable: install {', '.join(missing)} into Blender's Python")
            return {"FINISHED"}
        backend = importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend")
        self.report({"INFO"}, f"In-process backend {backend.__version__} ready")
        return {"FINISHED"}

    def _environment(self, context):
        """The backend environment: present, torch, device, free VRAM, models per task (asked of its own Python)."""
        import json
        import subprocess

        envsetup = importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.backend.envsetup")
        root = preferences.env_root(context)
        st = envsetup.env_status(root)
        if not st["present"]:
            self.report({"WARNING"}, "Backend environment not set up: Edit > Preferences > Add-ons > Coupled Edit > Set Up Backend")
            return {"FINISHED"}
        env = backend_process_env(context)
        r = subprocess.run([str(envsetup.env_python(root)), "-m", "backend", "doctor"], capture_output=True, text=True, env=env,
                           cwd=env["PYTHONPATH"], timeout=120)  # fmt: skip
        if r.returncode != 0:
            self.report({"ERROR"}, f"the backend environment does not start: {r.stderr.strip().splitlines()[-1:]}; Set Up Backend again")
            return {"FINISHED"}
        d = json.loads(r.stdout)
        vram = f", {d['free_vram_gb']:.1f} GB free" if d.get("free_vram_gb") is not None else ""
        ready = [t for t, ms in d["models"].items() if all(ms.values())]
        sync = "" if st["in_sync"] else "; requirements changed: Set Up Backend again"
        self.report({"INFO"}, f"Backend environment: torch {d['torch']} on {d['device_name']}{vram}; tasks with every model present: "
                              f"{', '.join(ready) or 'none (download the models)'}{sync}")  # fmt: skip
        return {"FINISHED"}
