"""Rigs built in a real scene, renders for editing, and job folders the backend accepts."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def mods(addon):
    names = ("rigs", "render", "export", "cameras", "camera_math")
    return {n: importlib.import_module(f"coupled_edit.scene_io.{n}") for n in names}


def small_scene(scene):
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 48, 32, 100
    bpy.ops.mesh.primitive_monkey_add(location=(0.2, -0.1, 0.3))
    monkey = bpy.context.active_object
    monkey.modifiers.new("sub", "SUBSURF")
    bpy.ops.mesh.primitive_cube_add(size=0.5, location=(1.0, 0.5, 0.0))
    cube = bpy.context.active_object
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
    return [monkey, cube]


def test_turntable_frames_the_targets_and_is_ordered(mods, empty_scene):
    targets = small_scene(empty_scene)
    before = {o.name for o in bpy.data.objects}
    cams = mods["rigs"].build_turntable(bpy.context, targets, count=10, elevations_deg=(15.0, 40.0))
    assert len(cams) == 20 and len({o.name for o in bpy.data.objects} - before) == 20
    centre, _ = mods["rigs"].world_bounds(targets, bpy.context.evaluated_depsgraph_get())
    corners = np.array([np.array(t.matrix_world @ __import__("mathutils").Vector(c)) for t in targets for c in t.bound_box])
    angles = []
    for cam in cams:
        K, c2w = mods["cameras"].camera_matrices(cam, empty_scene)
        look = np.array(centre) - c2w[:3, 3]
        assert np.allclose(c2w[:3, 2], look / np.linalg.norm(look), atol=1e-5)  # looks at the centre
        uv = mods["camera_math"].project(corners, K, c2w)
        assert (uv >= 0).all() and (uv[:, 0] <= 48).all() and (uv[:, 1] <= 32).all()  # every corner in frame
        d = c2w[:3, 3] - np.array(centre)
        angles.append(np.arctan2(d[1], d[0]) % (2 * np.pi))
    assert np.all(np.diff(angles[:10]) > 0) and np.all(np.diff(angles[10:]) > 0)  # along the trajectory


def test_rig_sources_and_reference_view(mods, empty_scene):
    small_scene(empty_scene)
    cams = mods["rigs"].build_turntable(bpy.context, [], count=3, radius=5)
    coll = bpy.data.collections[cams[0].users_collection[0].name]
    assert mods["rigs"].rig_from_collection(coll) == cams
    empty_scene.camera = cams[2]
    assert mods["rigs"].reference_index(cams, empty_scene) == 2
    empty_scene.camera = None
    assert mods["rigs"].reference_index(cams, empty_scene) == 0
    with pytest.raises(ValueError, match="holds no cameras"):
        mods["rigs"].rig_from_collection(bpy.data.collections.new("empty"))


def test_renders_restore_colour_management_even_on_error(mods, empty_scene, tmp_path):
    small_scene(empty_scene)
    cams = mods["rigs"].build_turntable(bpy.context, [], count=2, radius=5)
    vs = empty_scene.view_settings
    vs.view_transform, vs.exposure = "AgX", 0.7
    empty_scene.render.dither_intensity = 1.0
    empty_scene.render.filepath = "//user_output_"
    empty_scene.camera = cams[1]
    r = mods["render"].ViewRenderer(empty_scene, cams, tmp_path / "views", ["a", "b"])
    assert r.step() is True
    assert vs.view_transform == "Standard" and empty_scene.render.dither_intensity == 0  # while rendering
    r.close()  # cancel after one view
    assert (vs.view_transform, vs.exposure, empty_scene.render.dither_intensity) == ("AgX", pytest.approx(0.7), 1.0)
    assert empty_scene.render.filepath == "//user_output_" and empty_scene.camera == cams[1]
    with pytest.raises(ValueError, match="not cameras: \\['Cube'\\]"):
        mods["render"].ViewRenderer(empty_scene, [cams[0], bpy.data.objects["Cube"]], tmp_path / "v2", ["a", "b"])


def test_a_failed_render_restores_the_scene(mods, empty_scene, tmp_path, monkeypatch):
    small_scene(empty_scene)
    cams = mods["rigs"].build_turntable(bpy.context, [], count=2, radius=5)
    empty_scene.view_settings.view_transform = "AgX"
    real = mods["render"].render_view

    def second_fails(scene, camera, path):
        if camera == cams[1]:
            raise RuntimeError("disk full")
        return real(scene, camera, path)

    monkeypatch.setattr(mods["render"], "render_view", second_fails)
    r = mods["render"].ViewRenderer(empty_scene, cams, tmp_path / "v", ["a", "b"])
    r.step()
    with pytest.raises(RuntimeError, match="disk full"):
        r.step()
    assert empty_scene.view_settings.view_transform == "AgX" and empty_scene.render.film_transparent is False


def test_exported_job_is_valid_and_matches_the_scene(mods, empty_scene, tmp_path):
    from PIL import Image

    from backend.jobs import JobFolder

    small_scene(empty_scene)
    cams = mods["rigs"].build_turntable(bpy.context, [], count=4, radius=6)
    empty_scene.camera = cams[1]
    folder = mods["export"].export_rig(
        empty_scene, cams, tmp_path / "job", "novel_views", render=[True, True, False, False], models={"multiview": "seva-tiny"}
    )
    spec = JobFolder(folder).spec()  # the backend's validation
    assert spec.task == "novel_views" and spec.reference_view == 1
    assert [v.name for v in spec.views] == [c.name for c in cams]
    assert [v.image is not None for v in spec.views] == [True, True, False, False]
    for v, cam in zip(spec.views, cams, strict=True):
        K, c2w = mods["cameras"].camera_matrices(cam, empty_scene)
        assert np.allclose(v.K, K) and np.allclose(v.c2w, c2w)
        if v.image:
            im = Image.open(folder / "inputs" / v.image)
            assert im.size == (48, 32) and im.mode == "RGBA"
            alpha = np.asarray(im)[..., 3]
            assert alpha.min() == 0 and alpha.max() == 255  # transparent film: exact alpha of the objects
    with pytest.raises(FileExistsError):
        mods["export"].write_job(folder, json.loads((folder / "job.json").read_text()))


def test_photo_rig_uses_background_images_with_scaled_intrinsics(mods, empty_scene, tmp_path):
    from PIL import Image

    from backend.jobs import JobFolder

    small_scene(empty_scene)  # render frame 48 x 32
    cams = mods["rigs"].build_turntable(bpy.context, [], count=3, radius=5)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)  # 96 x 64: same aspect, twice the size
    Image.fromarray(photo).save(tmp_path / "photo.png")
    img = bpy.data.images.load(str(tmp_path / "photo.png"))
    for cam in cams[:2]:
        bg = cam.data.background_images.new()
        bg.image = img
    folder = mods["export"].export_photo_rig(empty_scene, cams, tmp_path / "job", "novel_views")
    spec = JobFolder(folder).spec()
    assert [v.image is not None for v in spec.views] == [True, True, False]
    K48, _ = mods["cameras"].camera_matrices(cams[0], empty_scene)
    v = spec.views[0]
    assert (v.width, v.height) == (96, 64) and np.allclose(np.array(v.K)[:2], K48[:2] * 2)
    saved = np.asarray(Image.open(folder / "inputs" / v.image).convert("RGB"))
    assert np.array_equal(saved, photo)  # the photo's pixels, untouched
    assert img.filepath == str(tmp_path / "photo.png")  # the user's image is unchanged
    wrong = Image.fromarray(photo[:, :64])  # 64 x 64: another aspect
    wrong.save(tmp_path / "square.png")
    cams[2].data.background_images.new().image = bpy.data.images.load(str(tmp_path / "square.png"))
    with pytest.raises(ValueError, match="photo is 64x64 but the render frame is 48x32"):
        mods["export"].export_photo_rig(empty_scene, cams, tmp_path / "job2", "novel_views")
