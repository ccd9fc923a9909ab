"""The model manager's operators: download a model with progress, point a model at a local copy."""

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import bpy

from .. import preferences
from . import stepwise
from .server_ops import _backend, backend_process_env


def download_python(context) -> str:
    """The Python that downloads: the backend environment's, else Blender's own when it has huggingface_hub."""
    import importlib.util

    envsetup = _backend("envsetup")
    root = preferences.env_root(context)
    if envsetup.env_status(root)["present"]:
        return str(envsetup.env_python(root))
    if importlib.util.find_spec("huggingface_hub") is not None:
        return sys.executable
    raise ValueError("downloading needs the backend environment: Edit > Preferences > Add-ons > Coupled Edit > Set Up Backend")


def hub_cli(context, action: str, *keys: str) -> subprocess.Popen:
    """``python -m backend models ACTION KEYS`` in a child that may reach the hub (refused while Offline is on)."""
    if preferences.get(context).offline:
        raise ValueError("Offline is on (Add-on Preferences): switch it off to reach the model hub")
    env = backend_process_env(context)
    env.pop("HF_HUB_OFFLINE", None)  # the switch above decides, not an inherited variable
    return subprocess.Popen([download_python(context), "-m", "backend", "models", action, *keys], cwd=env["PYTHONPATH"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


class ModelDownload:
    """``python -m backend models download KEY`` in a child process; ``step()`` reads its JSON progress lines."""

    def __init__(self, context, key: str) -> None:
        self.key, self.fraction, self.message, self.error = key, 0.0, f"{key}: asking the hub", None
        self.proc = hub_cli(context, "download", key)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(ln) for ln in self.proc.stdout], daemon=True).start()

    def step(self) -> bool:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line.startswith("{"):
                self._event(json.loads(line))
        if self.proc.poll() is None or not self._lines.empty():
            return True
        if self.proc.returncode != 0:
            raise RuntimeError(self.error or f"the download of {self.key} stopped (exit code {self.proc.returncode}): "
                               f"{self.proc.stderr.read()[-500:]}")  # fmt: skip
        return False

    def _event(self, ev: dict) -> None:
        if ev["event"] == "error":
            self.error = ev["message"]
            return
        total, have = ev.get("total") or 0, ev.get("bytes", 0)
        self.fraction = have / total if total else self.fraction
        eta = ev.get("eta_s")
        left = f", about {eta / 60:.0f} min left" if eta and eta >= 90 else (f", {eta:.0f} s left" if eta else "")
        rate = f", {ev['rate'] / 2**20:.1f} MB/s" if ev.get("rate") else ""
        self.message = f"{self.key}: {have / 2**30:.2f} of {total / 2**30:.2f} GB{rate}{left}"
        if ev["event"] == "done":
            self.fraction, self.message = 1.0, f"{self.key} downloaded ({total / 2**30:.2f} GB)"

    def cancel(self) -> None:
        """Stop now; the hub cache keeps what arrived and the next Download resumes it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class COUPLED_EDIT_OT_download_model(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.download_model"
    bl_label = "Download Model"
    bl_description = "Download this model's weights into the model cache (resumes after a cancel or a broken connection)"

    key: bpy.props.StringProperty(name="Model", description="Registry key of the model")

    def start(self, context):
        return ModelDownload(context, self.key)

    def finished(self, context, task):
        self.report({"INFO"}, task.message)
        return {"FINISHED"}


class COUPLED_EDIT_OT_set_model_path(bpy.types.Operator):
    bl_idname = "coupled_edit.set_model_path"
    bl_label = "Local Copy"
    bl_description = "Use your own copy of this model's weights (a file or a folder); with a path set already, forget it"

    key: bpy.props.StringProperty(name="Model", description="Registry key of the model")
    filepath: bpy.props.StringProperty(name="Weights", subtype="FILE_PATH", description="The weights file, or a file inside its folder")
    use_folder: bpy.props.BoolProperty(name="Use Its Folder", default=False, description="Point at the folder holding the chosen file")

    def invoke(self, context, event):
        prefs = preferences.get(context)
        if any(m.key == self.key for m in prefs.model_paths):
            return self.execute(context)  # the X button: forget it
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        prefs = preferences.get(context)
        for i, m in enumerate(prefs.model_paths):
            if m.key == self.key:
                prefs.model_paths.remove(i)
                if not self.filepath:
                    self.report({"INFO"}, f"{self.key}: back to the model cache")
                    return {"FINISHED"}
                break
        if not self.filepath:
            return {"CANCELLED"}
        path = Path(bpy.path.abspath(self.filepath))
        if self.use_folder:
            path = path.parent
        if not path.exists():
            self.report({"ERROR"}, f"{path} does not exist")
            return {"CANCELLED"}
        entry = prefs.model_paths.add()
        entry.key, entry.path = self.key, str(path)
        self.report({"INFO"}, f"{self.key}: using {path}")
        return {"FINISHED"}


SIZES: dict[str, int | str] = {}  # registry key -> bytes to download (or why unknown), from the hub, this session


class SizeQuery:
    """``python -m backend models sizes`` in a child process (the hub's file lists); fills ``SIZES``."""

    def __init__(self, context) -> None:
        self.proc = hub_cli(context, "sizes")
        self.fraction, self.message = 0.0, "asking the hub for model sizes"

    def step(self) -> bool:
        if self.proc.poll() is None:
            return True
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"could not ask the hub: {err.strip()[-300:]}")
        SIZES.update(json.loads(out))
        self.fraction, self.message = 1.0, "sizes known"
        return False

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


class COUPLED_EDIT_OT_model_sizes(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.model_sizes"
    bl_label = "Ask Sizes"
    bl_description = "Ask the model hub how much each model downloads"

    def start(self, context):
        return SizeQuery(context)

    def finished(self, context, task):
        total = sum(v for v in SIZES.values() if isinstance(v, int))
        self.report({"INFO"}, f"sizes of {len(SIZES)} models known ({total / 2**30:.1f} GB in all)")
        return {"FINISHED"}


def size_text(key: str) -> str:
    v = SIZES.get(key)
    if not isinstance(v, int):
        return ""
    return f"{v / 2**30:.1f} GB" if v >= 2**30 else f"{v / 2**20:.0f} MB"
