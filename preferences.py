"""Add-on preferences: where jobs run (in Blender's Python or on a server), model weights, hub access."""

import os
from pathlib import Path

import bpy


class CoupledEditModelPath(bpy.types.PropertyGroup):
    key: bpy.props.StringProperty(name="Model", description="Registry key of the model, e.g. seva-1.1")
    path: bpy.props.StringProperty(name="Path", subtype="FILE_PATH", description="Your copy of its weights: the file, or its folder")


class CoupledEditPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend: bpy.props.EnumProperty(
        name="Run Jobs",
        items=[
            ("ENVIRONMENT", "Backend Environment", "In the add-on's own Python environment (Set Up Backend below): a server on this "
             "computer, started when a job needs it; Blender's Python is never touched"),
            ("IN_PROCESS", "In Blender", "In a worker thread of Blender's own Python (needs torch installed into it by you)"),
            ("SERVER", "On a Server", "On a Coupled Edit server you run: this computer (Start Server) or a GPU machine on the network"),
        ],
        default="ENVIRONMENT",
        description="Where the diffusion models run",
    )  # fmt: skip
    env_dir: bpy.props.StringProperty(
        name="Environment Folder",
        subtype="DIR_PATH",
        description="Where Set Up Backend puts the backend's Python environment (empty: the add-on's user folder)",
    )
    torch_build: bpy.props.EnumProperty(
        name="Torch Build",
        items=[
            ("AUTO", "Automatic", "Chosen from this computer: NVIDIA driver -> a CUDA build it supports, Apple -> Metal, else CPU"),
            ("cu128", "CUDA 12.8", "NVIDIA driver 570 or newer"),
            ("cu126", "CUDA 12.6", "NVIDIA driver 560 or newer"),
            ("cu118", "CUDA 11.8", "NVIDIA driver 520 or newer"),
            ("cpu", "CPU", "No GPU: slow, for trying things out"),
            ("default", "Package Index Default", "Whatever the package index serves (Apple: the Metal build)"),
        ],
        default="AUTO",
        description="Which torch build Set Up Backend installs",
    )
    torch_requirement: bpy.props.StringProperty(
        name="Torch Version", default="torch>=2.4", description="The torch requirement to install, e.g. torch==2.5.1"
    )
    setup_tool: bpy.props.EnumProperty(
        name="Installer",
        items=[("auto", "Automatic", "uv when it can be installed, else pip"), ("uv", "uv", "Fast; installed privately"),
               ("pip", "pip", "Python's venv + pip")],
        default="auto",
        description="What Set Up Backend installs with",
    )  # fmt: skip
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
    hf_token: bpy.props.StringProperty(
        name="Hugging Face Token",
        subtype="PASSWORD",
        description="Access token for gated models (SEVA, FLUX.1-dev): given only to the download and backend processes, "
        "never written into job folders or logs",
    )
    model_paths: bpy.props.CollectionProperty(
        type=CoupledEditModelPath, name="Local Copies", description="Models whose weights come from your own files, not the cache"
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
        from .backend import envsetup
        from .operators import stepwise

        layout = self.layout
        layout.prop(self, "backend")
        if self.backend == "ENVIRONMENT":
            box = layout.box()
            root = env_root(context)
            st = envsetup.env_status(root)
            if st["present"]:
                versions = st.get("versions", {})
                gpu = "GPU" if versions.get("cuda") else "no CUDA GPU"
                box.label(text=f"Ready: torch {versions.get('torch', '?')} ({gpu}), {st['torch']['label']}", icon="CHECKMARK")
                if not st["in_sync"]:
                    box.label(text="The add-on's requirements changed: Set Up Backend again to update", icon="ERROR")
            else:
                box.label(text=f"Not set up. It will install torch for: {torch_choice(context).label}", icon="INFO")
            task = stepwise.TASKS.get(context.scene.name)
            if isinstance(task, envsetup.EnvSetup):
                box.progress(factor=task.fraction, type="BAR", text=task.message)
                box.operator("coupled_edit.cancel_task", icon="CANCEL")
            else:
                row = box.row()
                row.operator("coupled_edit.setup_backend", icon="IMPORT")
                row.operator("coupled_edit.remove_backend", icon="TRASH")
            box.prop(self, "torch_build")
            box.prop(self, "torch_requirement")
            box.prop(self, "setup_tool")
            box.prop(self, "env_dir")
            box.label(text=f"Folder: {root}  (log: setup.log)")
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
        layout.prop(self, "hf_token")
        draw_models(layout.box(), context, None)


def draw_models(box, context, keys: list[str] | None) -> None:
    """The model manager: what each model is, whether it is here, Download / local path buttons.
    ``keys``: only these (the panel shows the current task's); None: every task's, by task."""
    from .backend import model_needs
    from .backend.registry import MODELS, TASK_MODELS
    from .operators import model_ops, stepwise

    prefs = get(context)
    local = {m.key: m.path for m in prefs.model_paths}
    groups = {"this task": keys} if keys is not None else TASK_MODELS
    task = stepwise.TASKS.get(context.scene.name)
    if isinstance(task, model_ops.ModelDownload):
        box.progress(factor=task.fraction, type="BAR", text=task.message)
        box.operator("coupled_edit.cancel_task", icon="CANCEL")
    if keys is None:
        box.operator("coupled_edit.model_sizes", icon="QUESTION")
    shown = set()
    for group, group_keys in groups.items():
        if keys is None:
            box.label(text=group)
        for key in group_keys:
            if key in shown and keys is None:
                continue
            shown.add(key)
            e = MODELS[key]
            row = box.row(align=True)
            here = key in local or model_needs.in_cache(e)
            tags = ", ".join(t for t in (model_ops.size_text(key), e.licence, "gated" if e.gated else "") if t)
            row.label(text=f"{key}  ({tags})", icon="CHECKMARK" if here else "IMPORT")
            if key in local:
                row.label(text=f"local: {local[key]}")
                row.operator("coupled_edit.set_model_path", text="", icon="X").key = key
            else:
                if not here:
                    row.operator("coupled_edit.download_model", text="Download").key = key
                row.operator("coupled_edit.set_model_path", text="", icon="FILEBROWSER").key = key


def model_paths(context) -> dict[str, str]:
    """Local copies the user chose, as a job's ``models.paths``."""
    return {m.key: bpy.path.abspath(m.path) for m in get(context).model_paths if m.key and m.path}


def get(context) -> CoupledEditPreferences:
    return context.preferences.addons[__package__].preferences


def env_root(context) -> Path:
    """The backend environment's folder: the preference, else the add-on's user folder."""
    prefs = get(context)
    if prefs.env_dir:
        return Path(bpy.path.abspath(prefs.env_dir))
    try:  # an installed extension
        return Path(bpy.utils.extension_path_user(__package__, path="backend_env", create=True))
    except (ValueError, AttributeError):  # a legacy add-on folder (development checkouts)
        return Path(bpy.utils.user_resource("SCRIPTS", path="coupled_edit_env", create=True))


def torch_choice(context):
    from .backend import envsetup

    prefs = get(context)
    if prefs.torch_build == "AUTO":
        auto = envsetup.detect_torch()
        return envsetup.TorchChoice(auto.key, auto.label, prefs.torch_requirement or "torch>=2.4", auto.index_url)
    return envsetup.torch_build(prefs.torch_build, prefs.torch_requirement or "torch>=2.4")


def hub_env(context) -> dict[str, str]:
    """What a backend process needs to know about the hub: cache folder, offline, the token (only ever
    handed to a child process's environment)."""
    prefs = get(context)
    env = {"HF_HOME": bpy.path.abspath(prefs.model_cache)} if prefs.model_cache else {}
    env |= {"HF_TOKEN": prefs.hf_token} if prefs.hf_token else {}
    return env | ({"HF_HUB_OFFLINE": "1"} if prefs.offline else {})


def server(context) -> dict | None:
    """How jobs reach a server: {"url", "token"} for a server the user runs, {"managed": {...}} for the
    backend environment's own server (started on demand), None for Blender's Python."""
    prefs = get(context)
    if prefs.backend == "SERVER":
        return {"url": prefs.server_url.strip(), "token": prefs.server_token or None}
    if prefs.backend == "ENVIRONMENT":
        from .backend import envsetup

        root = env_root(context)
        status = envsetup.env_status(root)
        if not status["present"]:
            raise ValueError("the backend environment is not set up: Edit > Preferences > Add-ons > Coupled Edit > Set Up Backend "
                             "(or choose Run Jobs: In Blender / On a Server)")  # fmt: skip
        if not status["in_sync"]:
            raise ValueError("this version of the add-on needs other packages in its backend environment: press Set Up Backend "
                             "(Edit > Preferences > Add-ons > Coupled Edit) to update it")  # fmt: skip
        return {"managed": {"python": str(envsetup.env_python(root)), "jobs_dir": str(root / "jobs"), "env": hub_env(context)}}
    return None


_SET_BY_US: set[str] = set()


def apply_environment(context) -> None:
    """Hand the preferences to an in-process backend at once: the variables huggingface_hub reads, and its
    constants when it is already imported (it reads the variables only at import)."""
    import sys

    from .backend.model_needs import is_offline

    prefs = get(context)
    if prefs.model_cache:
        os.environ["HF_HOME"] = bpy.path.abspath(prefs.model_cache)
    if prefs.offline:
        if not is_offline():
            _SET_BY_US.add("HF_HUB_OFFLINE")  # undone when the switch goes off; a variable set outside Blender stays
        os.environ["HF_HUB_OFFLINE"] = "1"
    elif "HF_HUB_OFFLINE" in _SET_BY_US:  # switched back on: only undo what this switch did
        os.environ.pop("HF_HUB_OFFLINE", None)
        _SET_BY_US.discard("HF_HUB_OFFLINE")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = is_offline()
        if prefs.model_cache and not os.environ.get("HF_HUB_CACHE"):
            constants.HF_HOME = os.environ["HF_HOME"]
            constants.HF_HUB_CACHE = os.path.join(os.environ["HF_HOME"], "hub")


def register() -> None:
    bpy.utils.register_class(CoupledEditModelPath)
    bpy.utils.register_class(CoupledEditPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(CoupledEditPreferences)
    bpy.utils.unregister_class(CoupledEditModelPath)
