"""Add-on preferences: where jobs run (in Blender's Python or on a server), model weights, hub access."""

import os

import bpy


class CoupledEditPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend: bpy.props.EnumProperty(
        name="Run Jobs",
        items=[
            ("IN_PROCESS", "In Blender", "In a worker thread of Blender's own Python (needs torch installed into it)"),
            ("SERVER", "On a Server", "On a Coupled Edit server: this computer (Start Server) or a GPU machine on the network"),
        ],
        default="IN_PROCESS",
        description="Where the diffusion models run",
    )
    server_url: bpy.props.StringProperty(
        name="Server", default="http://127.0.0.1:8765", description="Address of the server, e.g. http://gpu-box.local:8765"
    )
    server_token: bpy.props.StringProperty(
        name="Server Token", subtype="PASSWORD", description="The token the server was started with (--token); empty: none"
    )
    server_python: bpy.props.StringProperty(
        name="Server Python",
        subtype="FILE_PATH",
        description="Python interpreter with torch and the backend's packages, used by Start Server (empty: Blender's own)",
    )
    server_jobs_dir: bpy.props.StringProperty(
        name="Server Jobs Folder", subtype="DIR_PATH", description="Where a server started here keeps its jobs (empty: a temporary folder)"
    )
    model_cache: bpy.props.StringProperty(
        name="Model Cache",
        subtype="DIR_PATH",
        description="Hugging Face cache folder for model weights (empty: the default, HF_HOME or ~/.cache/huggingface)",
    )
    offline: bpy.props.BoolProperty(
        name="Offline",
        default=False,
        description="Never contact the model hub; use only weights already in the cache",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend")
        if self.backend == "SERVER":
            box = layout.box()
            box.prop(self, "server_url")
            box.prop(self, "server_token")
            box.prop(self, "server_python")
            box.prop(self, "server_jobs_dir")
            row = box.row()
            row.operator("coupled_edit.start_server", icon="PLAY")
            row.operator("coupled_edit.stop_server", icon="PAUSE")
        layout.prop(self, "model_cache")
        layout.prop(self, "offline")


def get(context) -> CoupledEditPreferences:
    return context.preferences.addons[__package__].preferences


def server(context) -> dict | None:
    """{"url", "token"} when jobs run on a server, else None."""
    prefs = get(context)
    if prefs.backend != "SERVER":
        return None
    return {"url": prefs.server_url.strip(), "token": prefs.server_token or None}


def apply_environment(context) -> None:
    """Hand the preferences to the backend (huggingface_hub reads these variables)."""
    prefs = get(context)
    if prefs.model_cache:
        os.environ["HF_HOME"] = bpy.path.abspath(prefs.model_cache)
    if prefs.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def register() -> None:
    bpy.utils.register_class(CoupledEditPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(CoupledEditPreferences)
