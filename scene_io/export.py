"""A job folder from a Blender rig: ``job.json`` (the backend's JobSpec layout) and ``inputs/``.

Written as plain JSON so it needs nothing inside Blender beyond its own Python; the backend
validates it when the job runs (in-process, on the server, or with ``python -m backend validate-job``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bpy

from ..backend.naming import view_stem
from .cameras import camera_matrices
from .paths import resolve_folder
from .render import ViewRenderer, is_collection_instance
from .rigs import reference_index


def view_stems(cameras: Sequence[bpy.types.Object]) -> dict[str, str]:
    """Camera name -> file stem, unique by construction (index in the rig + ASCII slug; backend.naming)."""
    return {c.name: view_stem(i, c.name) for i, c in enumerate(cameras)}


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


GEOMETRY = ("MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME")


def scene_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Objects that can appear in the object-index pass, in a stable order: geometry and collection
    instances (an instance moves as one object)."""
    return sorted((o for o in scene.objects if o.type in GEOMETRY or is_collection_instance(o)), key=lambda o: o.name)


def finish_job(folder: Path, scene, cameras, renderer: ViewRenderer, task: str, **sections) -> Path:
    """job.json (+ objects.json when passes were rendered) once every view is rendered."""
    images = {c.name: p.name for c, p in zip(renderer.cameras, renderer.done, strict=True)}
    passes = renderer.pass_files if renderer.passes_enabled else None
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

    ``passes``: also planar depth, world normals and object index (float .npy) of every view,
    rendered or not, so generated views can be checked for consistency and projected."""
    render = list(render) if render is not None else [True] * len(cameras)
    folder = resolve_folder(folder)
    to_render = [c for c, r in zip(cameras, render, strict=True) if r]
    stems = view_stems(cameras)
    others = [(c, stems[c.name]) for c in cameras if c not in to_render]
    renderer = ViewRenderer(scene, to_render, folder / "inputs", [stems[c.name] for c in to_render], passes, scene_objects(scene), others)
    renderer.run()
    return finish_job(folder, scene, cameras, renderer, task, **sections)


def photo_of(cam: bpy.types.Object) -> bpy.types.Image | None:
    """The first image background of a camera (a photo of a capture rig), if any."""
    for bg in cam.data.background_images:
        if bg.source == "IMAGE" and bg.image is not None and bg.image.size[0] > 0:
            return bg.image
    return None


def copy_image_file(image: bpy.types.Image, folder: Path, name: str) -> Path:
    """The image's own bytes (packed or on disk, any format PIL reads) into ``folder``; never re-encoded.

    Only an image with no file at all (generated or painted) is saved as PNG. The user's image
    datablock is not modified.
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    ext = Path(image.filepath).suffix.lower() or ".png"
    if image.packed_file is not None:
        dest = folder / f"{name}{ext}"
        dest.write_bytes(image.packed_file.data)
        return dest
    src = Path(bpy.path.abspath(image.filepath, library=image.library)) if image.filepath else None
    if src is not None and src.is_file():
        dest = folder / f"{name}{ext}"
        shutil.copyfile(src, dest)
        return dest
    dest = folder / f"{name}.png"
    copy = image.copy()
    try:
        copy.filepath_raw, copy.file_format = str(dest), "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return dest


def photo_view(scene: bpy.types.Scene, cam: bpy.types.Object, image: bpy.types.Image, folder: Path, name: str) -> dict:
    """A view from a camera's background photo: the photo saved into inputs/, K scaled to its size.

    The photo must have the render's aspect ratio (the camera's K is defined for that frame).
    """
    K, c2w = camera_matrices(cam, scene)
    s = scene.render.resolution_percentage / 100
    W, H = int(scene.render.resolution_x * s), int(scene.render.resolution_y * s)
    pw, ph = image.size
    if abs(pw / ph - W / H) > 0.01 * (W / H):
        raise ValueError(
            f"camera {cam.name!r}: its photo is {pw}x{ph} but the render frame is {W}x{H}; "
            "set the scene resolution to the photos' aspect ratio so the camera's field of view matches them"
        )
    K = K.copy()
    K[0] *= pw / W
    K[1] *= ph / H
    dest = copy_image_file(image, Path(folder) / "inputs", name)
    return {"name": cam.name, "width": pw, "height": ph, "K": K.tolist(), "c2w": c2w.tolist(), "image": dest.name}


def export_photo_rig(scene: bpy.types.Scene, cameras: Sequence[bpy.types.Object], folder: Path, task: str, **sections) -> Path:
    """A job from cameras that carry photos (inputs) and cameras without (targets); nothing is rendered."""
    folder = resolve_folder(folder)
    if (folder / "job.json").exists():
        raise FileExistsError(f"{folder} already holds a job; choose a new folder")
    views, stems = [], view_stems(cameras)
    for cam in cameras:
        img = photo_of(cam)
        views.append(photo_view(scene, cam, img, folder, stems[cam.name]) if img is not None else view_entry(scene, cam, None))
    if not any(v["image"] for v in views):
        raise ValueError("none of the cameras has a background photo; attach the capture's photos as camera background images")
    spec = {"task": task, "views": views, "reference_view": reference_index(cameras, scene)}
    spec.update({k: v for k, v in sections.items() if v is not None})
    return write_job(folder, spec)
