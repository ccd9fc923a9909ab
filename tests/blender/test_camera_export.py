"""Exported K and c2w against Blender's own projection and against rendered marker positions."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")
from mathutils import Euler, Vector  # noqa: E402  (ships with bpy)

# (resolution x, y, %, pixel aspect x, y, sensor fit, lens, sensor w, h, shift x, y)
CONFIGS = [
    (256, 256, 100, 1, 1, "AUTO", 50, 36, 24, 0.0, 0.0),
    (320, 200, 100, 1, 1, "VERTICAL", 40, 36, 20, 0.12, -0.07),
    (180, 300, 100, 1, 1, "AUTO", 35, 36, 24, -0.05, 0.10),
    (200, 300, 100, 1, 1, "HORIZONTAL", 35, 32, 24, 0.0, 0.0),
    (300, 200, 100, 1, 1.5, "AUTO", 50, 36, 24, 0.05, 0.0),
    (257, 193, 50, 1, 1, "VERTICAL", 28, 30, 18, 0.0, 0.15),  # odd size at a percentage: truncated
    (401, 299, 37, 2, 1, "HORIZONTAL", 60, 40, 30, -0.2, 0.3),
]


@pytest.fixture()
def cameras_mod(addon):
    return importlib.import_module("coupled_edit.scene_io.cameras")


def setup_camera(scene, cfg, scale=(1, 1, 1), parent_scale=None):
    rx, ry, pct, ax, ay, fit, lens, sw, sh, shx, shy = cfg
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = rx, ry, pct
    r.pixel_aspect_x, r.pixel_aspect_y = ax, ay
    data = bpy.data.cameras.new("cam")
    data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = lens, sw, sh, fit
    data.shift_x, data.shift_y = shx, shy
    cam = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(cam)
    cam.location = (3.0, -4.0, 2.0)
    cam.rotation_euler = Euler((math.radians(70), math.radians(5), math.radians(37)))
    cam.scale = scale
    if parent_scale is not None:
        parent = bpy.data.objects.new("rig_parent", None)
        scene.collection.objects.link(parent)
        parent.location = (0.5, 0.2, -0.3)
        parent.rotation_euler = Euler((0.1, -0.2, 0.3))
        parent.scale = (parent_scale,) * 3
        cam.parent = parent
    scene.camera = cam
    bpy.context.view_layer.update()
    return cam


def blender_projection(cam, scene, points):
    """What the renderers use: calc_matrix_camera at the truncated size, normalised camera matrix."""
    r = scene.render
    s = r.resolution_percentage / 100
    W, H = int(r.resolution_x * s), int(r.resolution_y * s)
    dg = bpy.context.evaluated_depsgraph_get()
    ev = cam.evaluated_get(dg)
    P = ev.calc_matrix_camera(dg, x=W, y=H, scale_x=r.pixel_aspect_x, scale_y=r.pixel_aspect_y)
    view = ev.matrix_world.normalized().inverted()
    out = []
    for p in points:
        c = P @ (view @ Vector((*p, 1.0)))
        out.append(((c.x / c.w + 1) / 2 * W, (1 - c.y / c.w) / 2 * H))
    return np.array(out)


def points_in_view(K, c2w, n=300, seed=0):
    rng = np.random.default_rng(seed)
    W, H = 2 * K[0, 2], 2 * K[1, 2]
    uv = rng.uniform([0.05 * W, 0.05 * H], [0.95 * W, 0.95 * H], size=(n, 2))
    depth = rng.uniform(1.0, 12.0, size=(n, 1))
    rays = np.c_[uv, np.ones(n)] @ np.linalg.inv(K).T * depth
    return rays @ c2w[:3, :3].T + c2w[:3, 3]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{c[0]}x{c[1]}@{c[2]}-{c[5]}-aspect{c[3]}:{c[4]}" for c in CONFIGS])
@pytest.mark.parametrize("variant", ["plain", "scaled", "parented"])
def test_projection_matches_blenders_camera_matrix(cameras_mod, empty_scene, cfg, variant):
    from coupled_edit.scene_io.camera_math import project

    kwargs = {"scaled": {"scale": (2.0, 0.5, 3.0)}, "parented": {"parent_scale": 1.7}}.get(variant, {})
    cam = setup_camera(empty_scene, cfg, **kwargs)
    K, c2w = cameras_mod.camera_matrices(cam, empty_scene)
    pts = points_in_view(K, c2w)
    ours = project(pts, K, c2w)
    theirs = blender_projection(cam, empty_scene, pts)
    print(f"max projection difference {np.abs(ours - theirs).max():.2e} px")
    assert np.abs(ours - theirs).max() < 1e-3, np.abs(ours - theirs).max()
    # R orthonormal, OpenCV axes: the camera looks along +z of c2w, i.e. -z of Blender's matrix
    R = c2w[:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0
    blender_forward = -np.array(cam.matrix_world.normalized().to_3x3().col[2])
    assert np.allclose(R[:, 2], blender_forward, atol=1e-6)


def test_orthographic_and_panoramic_cameras_are_rejected(cameras_mod, empty_scene):
    cam = setup_camera(empty_scene, CONFIGS[0])
    cam.data.type = "ORTHO"
    with pytest.raises(cameras_mod.CameraError, match="orthographic; Coupled Edit needs perspective"):
        cameras_mod.camera_matrices(cam, empty_scene)
    cam.data.type = "PANO"
    with pytest.raises(cameras_mod.CameraError, match="panoramic"):
        cameras_mod.camera_matrices(cam, empty_scene)
    cam.data.type = "PERSP"
    cam.scale = (-1, 1, 1)
    bpy.context.view_layer.update()
    with pytest.raises(ValueError, match="mirrored"):
        cameras_mod.camera_matrices(cam, empty_scene)


def test_constraints_are_followed(cameras_mod, empty_scene):
    cam = setup_camera(empty_scene, CONFIGS[1])
    target = bpy.data.objects.new("target", None)
    empty_scene.collection.objects.link(target)
    target.location = (0.3, 0.7, 0.2)
    con = cam.constraints.new("TRACK_TO")
    con.target, con.track_axis, con.up_axis = target, "TRACK_NEGATIVE_Z", "UP_Y"
    bpy.context.view_layer.update()
    K, c2w = cameras_mod.camera_matrices(cam, empty_scene)
    to_target = np.array(target.location) - c2w[:3, 3]
    assert np.allclose(c2w[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-6)


def _marker_scene(scene, cfg, positions):
    cam = setup_camera(scene, cfg)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"
    scene.render.dither_intensity = 0
    world = bpy.data.worlds.new("black")
    world.color = (0, 0, 0)
    scene.world = world
    for i, (p, colour) in enumerate(zip(positions, [(1, 0, 0), (0, 1, 0), (0, 0, 1)], strict=False)):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.06, location=tuple(p), segments=24, ring_count=12)
        sphere = bpy.context.active_object
        mat = bpy.data.materials.new(f"m{i}")
        nodes = mat.node_tree.nodes
        nodes.clear()
        emit = nodes.new("ShaderNodeEmission")
        emit.inputs["Color"].default_value = (*colour, 1)
        emit.inputs["Strength"].default_value = 5.0
        out = nodes.new("ShaderNodeOutputMaterial")
        mat.node_tree.links.new(emit.outputs[0], out.inputs[0])
        sphere.data.materials.append(mat)
    return cam


@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[5], (120, 90, 100, 1, 1.25, "AUTO", 35, 36, 24, 0.1, -0.05)])
def test_rendered_marker_centroids_match_projection(cameras_mod, empty_scene, cfg, tmp_path):
    from coupled_edit.scene_io.camera_math import project
    from PIL import Image

    cam = setup_camera(empty_scene, cfg)
    K, c2w = cameras_mod.camera_matrices(cam, empty_scene)
    W, H = int(cfg[0] * cfg[2] / 100), int(cfg[1] * cfg[2] / 100)
    uv = np.array([[0.3 * W, 0.35 * H], [0.62 * W, 0.55 * H], [0.45 * W, 0.75 * H]])
    pts = (np.c_[uv, np.ones(3)] @ np.linalg.inv(K).T * 4.0) @ c2w[:3, :3].T + c2w[:3, 3]
    bpy.data.objects.remove(cam)
    cam = _marker_scene(empty_scene, cfg, pts)
    K, c2w = cameras_mod.camera_matrices(cam, empty_scene)
    empty_scene.render.filepath = str(tmp_path / "markers.png")
    bpy.ops.render.render(write_still=True)
    img = np.asarray(Image.open(tmp_path / "markers.png").convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (H, W)
    expected = project(pts, K, c2w)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
    for ch in range(3):
        w = img[..., ch] * (img[..., ch] > 2 * img[..., [c for c in range(3) if c != ch]].max(axis=-1))
        assert w.sum() > 0, f"marker {ch} not visible"
        centroid = np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
        err = np.abs(centroid - expected[ch]).max()
        print(f"marker {ch}: centroid error {err:.3f} px")
        assert err < 0.5, (ch, centroid, expected[ch])
