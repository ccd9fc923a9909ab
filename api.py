"""Scripting API of Coupled Edit: everything the N-panel does, from Python or ``blender -b -P``.

    import coupled_edit.api as ce            # or bl_ext.user_default.coupled_edit.api when installed
    cams = ce.build_turntable(bpy.context, [bpy.data.objects["Chair"]], count=12)
    status = ce.run(bpy.context.scene, cams, "novel_views", "/tmp/chair_job",
                    models={"multiview": "seva-1.1"}, sampling={"steps": 50})
    ce.apply_as_strips(bpy.context.scene, cams, status.folder)

See docs/scripting.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bpy

from .scene_io.cameras import CameraError, camera_matrices
from .scene_io.capture import capture_before, object_changes, spatial_job
from .scene_io.export import build_spec, export_photo_rig, export_rig
from .scene_io.jobs import JobStatus, RigJob
from .scene_io.paths import resolve_folder
from .scene_io.project import apply_as_texture, project_views
from .scene_io.rigs import build_turntable, reference_index, rig_from_collection, rig_from_selection
from .scene_io.world import WorldError, envmap_edit, world_lighting
from .scene_io.writeback import apply_as_strips

__all__ = [
    "CameraError",
    "RunResult",
    "WorldError",
    "apply_as_strips",
    "apply_as_texture",
    "envmap_edit",
    "build_spec",
    "capture_before",
    "object_changes",
    "run_spatial_edit",
    "spatial_job",
    "build_turntable",
    "camera_matrices",
    "export_photo_rig",
    "export_rig",
    "project_views",
    "reference_index",
    "rig_from_collection",
    "rig_from_selection",
    "run",
    "world_lighting",
]


@dataclass
class RunResult:
    status: JobStatus
    folder: Path

    @property
    def ok(self) -> bool:
        return self.status.state == "done"


def run(
    scene: bpy.types.Scene,
    cameras: Sequence[bpy.types.Object],
    task: str,
    folder: str | Path,
    render: Sequence[bool] | None = None,
    on_progress: Callable[[JobStatus], None] | None = None,
    server: dict | None = None,
    **sections,
) -> RunResult:
    """Render, run and wait. ``render`` marks the views that are inputs (default: the reference view
    for ``novel_views``, all views otherwise); ``sections`` are JobSpec sections (models, sampling, ...).
    ``on_progress`` is called after every tick with the job's status (fraction, stage, ETA).
    ``server={"url": "http://127.0.0.1:8765", "token": None}`` runs the job on a job server."""
    if render is None and task == "novel_views" and not sections.get("photos"):
        ref = reference_index(cameras, scene)
        render = [i == ref for i in range(len(cameras))]
    job = RigJob(scene, cameras, folder, task, render=render, server=server, **sections)  # "//x": next to the .blend
    while (delay := job.tick()) is not None:
        if on_progress:
            on_progress(job.status)
        time.sleep(delay)  # let the worker thread have the interpreter
    if on_progress:
        on_progress(job.status)
    return RunResult(job.status, job.folder)


def run_spatial_edit(
    scene: bpy.types.Scene,
    capture_dir: str | Path,
    folder: str | Path,
    only: set[str] | None = None,
    on_progress: Callable[[JobStatus], None] | None = None,
    server: dict | None = None,
    **sections,
) -> RunResult:
    """The object changes since ``capture_before(scene, cameras, capture_dir)`` as a spatial_edit job, run and waited for."""
    import json

    capture_dir, folder = resolve_folder(capture_dir), resolve_folder(folder)
    spatial_job(capture_dir, scene, folder, only, **sections)
    names = json.loads((capture_dir / "capture.json").read_text())["cameras"]
    job = RigJob(scene, [scene.objects[n] for n in names], folder, "spatial_edit", prepared=True, server=server)
    while (delay := job.tick()) is not None:
        if on_progress:
            on_progress(job.status)
        time.sleep(delay)
    return RunResult(job.status, job.folder)
