"""Spatial edits in Blender: "Capture Before" renders the rig (colour, exact depth, object index)
and remembers every object's world matrix; after the user moves, duplicates or deletes objects,
"Run" turns the differences into a ``spatial_edit`` job on the captured views.

The capture lives in a folder (``capture.json`` + ``inputs/``) named by the scene property
``coupled_edit.capture_dir``; each run copies its inputs into a fresh job folder, so one capture
can be run again after further changes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import bpy
import numpy as np

from .export import build_spec, scene_objects, view_stems, write_job
from .paths import resolve_folder
from .render import ViewRenderer


def _data_name(obj: bpy.types.Object) -> str | None:
    """What a duplicate shares with its original: the mesh (or other data), or the instanced collection."""
    if obj.data is not None:
        return obj.data.name
    return f"collection:{obj.instance_collection.name}" if obj.instance_collection is not None else None


def _matrix(obj: bpy.types.Object) -> list[list[float]]:
    return [list(row) for row in obj.matrix_world]


class CaptureJob:
    """Capture Before one view per ``step()`` (the panel's progress, Esc to cancel); ``capture_before`` runs it whole.

    Renders every rig view with passes into ``folder/inputs`` and records the objects' matrices.
    ``photos``: a photo rig with proxy geometry: the colour of every camera that has a background
    photo is that photo (at the render's size), depth and object index come from the proxies.
    Cancelled or failed, the scene's settings are restored and the new folder is removed."""

    def __init__(self, scene: bpy.types.Scene, cameras, folder: Path, photos: bool = False) -> None:
        from .cameras import camera_problems

        self.folder = resolve_folder(folder)
        if (self.folder / "capture.json").exists():
            raise FileExistsError(f"{self.folder} already holds a capture; choose a new folder")
        self.scene, self.cams, self.photos = scene, list(cameras), photos
        problems = camera_problems(scene, self.cams)
        shown_by: dict[str, list[str]] = {}
        for o in scene_objects(scene):
            if o.type == "EMPTY":
                shown_by.setdefault(o.instance_collection.name, []).append(o.name)
        for coll, instances in shown_by.items():
            if len(instances) > 1:  # Cycles gives every instance of a collection the same object index
                problems.append(f"collection {coll!r} is instanced {len(instances)} times ({', '.join(instances)}): spatial edits tell "
                                "instances apart only when each collection is instanced once; make the others real "
                                "(Object > Apply > Make Instances Real)")  # fmt: skip
        if problems:
            raise ValueError("cannot capture: " + "; ".join(problems))
        self.created = not self.folder.exists()
        stems = view_stems(self.cams)
        self.renderer = ViewRenderer(scene, self.cams, self.folder / "inputs", [stems[c.name] for c in self.cams], True,
                                     scene_objects(scene), [])  # fmt: skip
        self.result: dict | None = None
        self.message = f"capturing 0/{len(self.cams)} views"

    @property
    def fraction(self) -> float:
        return self.renderer.steps_done / max(self.renderer.total, 1)

    def step(self) -> bool:
        """Render the next view (True while views remain); the last call writes capture.json."""
        try:
            if self.renderer.step():
                self.message = f"capturing {self.renderer.steps_done}/{self.renderer.total} views"
                return True
            self.result = self._finish()
        except BaseException:
            self.cancel()
            raise
        self.message = f"captured {len(self.cams)} views"
        return False

    def cancel(self) -> None:
        self.renderer.close()
        if self.created and self.result is None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _finish(self) -> dict:
        scene, cams, renderer, folder = self.scene, self.cams, self.renderer, self.folder
        images = {c.name: p.name for c, p in zip(renderer.cameras, renderer.done, strict=True)}
        if self.photos:
            _photos_as_colour(scene, cams, folder / "inputs", images)
        spec = build_spec(scene, cams, images, "spatial_edit", passes=renderer.pass_files)
        index = {name: i for i, name in renderer.object_names.items()}
        objects = {o.name: {"matrix": _matrix(o), "index": index.get(o.name), "data": _data_name(o)} for o in scene_objects(scene)}
        capture = {"time": time.time(), "cameras": [c.name for c in cams], "spec": spec, "objects": objects}
        (folder / "inputs" / "objects.json").write_text(json.dumps({str(k): v for k, v in renderer.object_names.items()}, indent=2))
        (folder / "capture.json").write_text(json.dumps(capture, indent=2))
        return capture


def capture_before(scene: bpy.types.Scene, cameras, folder: Path, photos: bool = False) -> dict:
    """Capture Before in one call (scripts): see ``CaptureJob``."""
    job = CaptureJob(scene, cameras, folder, photos)
    while job.step():
        pass
    return job.result


def object_changes(scene: bpy.types.Scene, capture: dict, only: set[str] | None = None) -> list[dict]:
    """The edits since the capture, as ``edit.objects`` entries: moved (matrix changed), deleted
    (gone or hidden from renders) and duplicated (a new object sharing a captured object's data,
    placed where the copy is now). ``only`` restricts them to these object names."""
    for vl in scene.view_layers:  # a script that just set .location has not re-evaluated matrix_world yet
        vl.update()
    changes = []
    before = capture["objects"]
    now = {o.name: o for o in scene_objects(scene)}
    for name, info in before.items():
        if info["index"] is None or (only and name not in only):
            continue
        obj = now.get(name)
        if obj is None or obj.hide_render:
            changes.append({"index": info["index"], "name": name, "action": "delete"})
            continue
        delta = np.array(_matrix(obj)) @ np.linalg.inv(np.array(info["matrix"]))
        if not np.allclose(delta, np.eye(4), atol=1e-6):
            changes.append({"index": info["index"], "name": name, "action": "move", "delta": delta.tolist()})
    by_data = {info["data"]: (name, info) for name, info in before.items() if info["data"] and info["index"] is not None}
    for name, obj in now.items():
        if name in before or obj.hide_render or (only and name not in only):
            continue
        src = by_data.get(_data_name(obj))
        if src is None:
            continue  # a new object with its own data: nothing captured to copy
        delta = np.array(_matrix(obj)) @ np.linalg.inv(np.array(src[1]["matrix"]))
        changes.append({"index": src[1]["index"], "name": f"{name} (copy of {src[0]})", "action": "duplicate", "delta": delta.tolist()})
    return changes


def spatial_job(capture_dir: Path, scene: bpy.types.Scene, folder: Path, only: set[str] | None = None, **sections) -> Path:
    """A job folder for the changes since the capture: the captured views + ``edit.objects``."""
    capture_dir, folder = resolve_folder(capture_dir), resolve_folder(folder)
    capture = json.loads((capture_dir / "capture.json").read_text())
    changes = object_changes(scene, capture, only)
    if not changes:
        raise ValueError("no object was moved, duplicated or deleted since Capture Before; edit the scene first")
    spec = dict(capture["spec"])
    spec["edit"] = {**sections.pop("edit", {}), "objects": changes}
    spec.update({k: v for k, v in sections.items() if v is not None})
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(capture_dir / "inputs", folder / "inputs")
    return write_job(folder, spec)


def _photos_as_colour(scene: bpy.types.Scene, cams, inputs: Path, images: dict[str, str]) -> None:
    """Replace each rendered colour image by the camera's photo, resized to the render (same K, same passes)."""
    from PIL import Image

    from .export import copy_image_file, photo_of

    with_photo = 0
    for cam in cams:
        img = photo_of(cam)
        if img is None:
            continue
        dest = inputs / images[cam.name]
        W, H = Image.open(dest).size
        pw, ph = img.size
        if abs(pw / ph - W / H) > 0.01 * (W / H):
            raise ValueError(f"camera {cam.name!r}: its photo is {pw}x{ph} but the render frame is {W}x{H}; match the aspect ratios")
        src = copy_image_file(img, inputs / "photos", dest.stem)
        Image.open(src).convert("RGB").resize((W, H), Image.LANCZOS).convert("RGBA").save(dest)
        with_photo += 1
    if not with_photo:
        raise ValueError("none of the rig's cameras has a background photo; attach the photos or turn Use Camera Photos off")
