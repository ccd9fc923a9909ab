"""Tell the artist whether the models can run inside Blender or need the server."""

import importlib
import importlib.util

import bpy

from .. import preferences

REQUIRED = ("torch", "diffusers", "transformers", "safetensors", "pydantic")


def missing_modules() -> list[str]:
    """Modules the in-process backend needs that this Python cannot import."""
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


class COUPLED_EDIT_OT_check_backend(bpy.types.Operator):
    bl_idname = "coupled_edit.check_backend"
    bl_label = "Check Backend"
    bl_description = "Check whether the diffusion models can run inside Blender or need the server"

    def execute(self, context):
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
