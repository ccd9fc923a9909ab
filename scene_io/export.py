"""A job folder from a Blender rig: ``job.json`` (the backend's JobSpec layout) and ``inputs/``.

Written as plain JSON so it needs nothing inside Blender beyond its own Python; the backend
validates it when the job runs (in-process, on the server, or with ``python -m backend validate-job``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bpy

from .cameras import camera_matrices
from .render import ViewRenderer
from .rigs import reference_index


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "view"


def view_entry(scene: bpy.types.Scene, cam: bpy.types.Object, image: str | None, passes: dict[str, str] | None = None) -> dict:
    K, c2w = camera_matrices(cam, scene)
    s = scene.render.resolution_percentage / 100
    return {
        "name": cam.name,
        "width": int(scene.render.resolution_x * s),
        "height": int(scene.render.resolution_y * s),
        "K": K.tolist(),
        "c2w": c2w.tolist(),
        "image": image,
        **(passes or {}),
    }


def build_spec(
    scene: bpy.types.Scene,
    cameras: Sequence[bpy.types.Object],
    images: dict[str, str | None],
    task: str,
    passes: dict[str, dict[str, str]] | None = None,
    **sections,
) -> dict:
    """The JobSpec as a dict: views in rig order, reference = the scene camera when in the rig."""
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ValueError("camera names must be unique")
    passes = passes or {}
    spec = {
        "task": task,
        "views": [view_entry(scene, c, images.get(c.name), passes.get(c.name)) for c in cameras],
        "reference_view": reference_index(cameras, scene),
    }
    spec.update({k: v for k, v in sections.items() if v is not None})
    return spec


def write_job(folder: Path, spec: dict) -> Path:
    """job.json written atomically; refuses to overwrite an existing job."""
    folder = Path(folder)
    if (folder / "job.json").exists():
        raise FileExistsError(f"{folder} already holds a job; choose a new folder")
    (folder / "inputs").mkdir(parents=True, exist_ok=True)
    (folder / "outputs").mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".job.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2)
    os.replace(tmp, folder / "job.json")
    (folder / "log").touch()
    return folder


def scene_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Objects that can appear in the object-index pass, in a stable order."""
    return sorted(
        (o for o in scene.objects if o.type in ("MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME")),
        key=lambda o: o.name,
    )


def finish_job(folder: Path, scene, cameras, renderer: ViewRenderer, task: str, **sections) -> Path:
    """job.json (+ objects.json when passes were rendered) once every view is rendered."""
    images = {c.name: p.name for c, p in zip(renderer.cameras, renderer.done, strict=True)}
    passes = {c.name: f for c, f in zip(renderer.cameras, renderer.pass_files, strict=True)} if renderer.passes_enabled else None
    if renderer.passes_enabled:
        (Path(folder) / "inputs").mkdir(parents=True, exist_ok=True)
        (Path(folder) / "inputs" / "objects.json").write_text(json.dumps({str(k): v for k, v in renderer.object_names.items()}, indent=2))
    return write_job(folder, build_spec(scene, cameras, images, task, passes=passes, **sections))


def export_rig(
    scene: bpy.types.Scene,
    cameras: Sequence[bpy.types.Object],
    folder: Path,
    task: str,
    render: Sequence[bool] | None = None,
    passes: bool = False,
    **sections,
) -> Path:
    """Render the views marked in ``render`` (default: all) into inputs/ and write the job (blocking).

    ``passes``: also planar depth, world normals and object index of those views (float .npy)."""
    render = list(render) if render is not None else [True] * len(cameras)
    folder = Path(folder)
    to_render = [c for c, r in zip(cameras, render, strict=True) if r]
    renderer = ViewRenderer(scene, to_render, folder / "inputs", [safe_name(c.name) for c in to_render], passes, scene_objects(scene))
    renderer.run()
    return finish_job(folder, scene, cameras, renderer, task, **sections)
