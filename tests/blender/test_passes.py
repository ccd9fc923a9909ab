"""Geometry passes as float data: planar depth, world normals and object index, exact at pixel centres."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def scene(addon, empty_scene):
    s = empty_scene
    s.render.engine = "CYCLES"
    s.render.resolution_x, s.render.resolution_y = 64, 48
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0, 0, 0))
    bpy.context.active_object.name = "Box"
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(2.2, 0.4, 0.3))
    bpy.context.active_object.name = "Ball"
    bpy.data.objects["Ball"].pass_index = 42  # the user's own value must survive
    rigs = importlib.import_module("coupled_edit.scene_io.rigs")
    cams = rigs.build_turntable(bpy.context, [bpy.data.objects["Box"]], count=3, elevations_deg=(25.0,))
    return s, cams


def test_depth_normals_and_index_match_the_geometry(scene, tmp_path):
    s, cams = scene
    export = importlib.import_module("coupled_edit.scene_io.export")
    cameras = importlib.import_module("coupled_edit.scene_io.cameras")
    vl = bpy.context.view_layer
    before = (s.render.engine, vl.use_pass_z, vl.use_pass_normal, s.render.image_settings.file_format, s.render.filter_size)
    folder = export.export_rig(s, cams, tmp_path / "job", "novel_views", render=[True, True, False], passes=True)
    target = json.loads((folder / "job.json").read_text())["views"][2]
    assert target["image"] is None and (folder / "inputs" / target["depth"]).exists()  # generated views get geometry too
    assert (s.render.engine, vl.use_pass_z, vl.use_pass_normal, s.render.image_settings.file_format, s.render.filter_size) == before
    assert bpy.data.objects["Ball"].pass_index == 42 and bpy.data.objects["Box"].pass_index == 0
    spec = json.loads((folder / "job.json").read_text())
    names = {int(k): v for k, v in json.loads((folder / "inputs" / "objects.json").read_text()).items()}
    box_index = next(k for k, v in names.items() if v == "Box")
    from backend.jobs import JobFolder

    JobFolder(folder).spec()  # the backend accepts the passes
    for v, cam in zip(spec["views"][:2], cams[:2], strict=True):
        depth = np.load(folder / "inputs" / v["depth"])
        normal = np.load(folder / "inputs" / v["normal"])
        index = np.load(folder / "inputs" / v["object_index"])
        assert depth.shape == (48, 64) and normal.shape == (48, 64, 3) and index.dtype == np.int32
        K, c2w = cameras.camera_matrices(cam, s)
        ys, xs = np.mgrid[0:48, 0:64] + 0.5
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T  # z = 1: planar depth scales them
        on_box = index == box_index
        assert on_box.sum() > 200 and np.isinf(depth[index == 0]).all() and np.isfinite(depth[index > 0]).all()
        pts = (rays[on_box] * depth[on_box][:, None]) @ c2w[:3, :3].T + c2w[:3, 3]
        assert np.abs(np.abs(pts).max(axis=1) - 1.0).max() < 2e-3  # every box pixel lies on the box surface
        n = normal[on_box]
        axis = np.abs(pts).argmax(axis=1)
        expected = np.zeros_like(n)
        expected[np.arange(len(n)), axis] = np.sign(pts[np.arange(len(n)), axis])
        assert np.abs(n - expected).max() < 1e-3  # world-space face normals
