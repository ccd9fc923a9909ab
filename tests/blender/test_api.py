"""The scripting API end to end, as docs/scripting.md uses it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.naming import view_stem

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def test_batch_example_over_two_scenes(addon, empty_scene, tmp_path):
    ce = importlib.import_module("coupled_edit.api")
    for name in ("chair", "lamp"):
        scene = bpy.data.scenes.new(name)
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 1
        scene.cycles.use_denoising = False
        scene.render.resolution_x = scene.render.resolution_y = 64
        bpy.context.window.scene = scene
        bpy.ops.mesh.primitive_cube_add()
        cams = ce.build_turntable(bpy.context, [o for o in scene.objects if o.type == "MESH"], count=4)
        scene.camera = cams[2]
        seen = []
        res = ce.run(
            scene,
            cams,
            "novel_views",
            tmp_path / name,
            models={"multiview": "seva-tiny"},
            sampling={"steps": 2},
            multiview={"size": 64, "window": 4},
            on_progress=lambda st, seen=seen: seen.append(st.fraction),
        )
        assert res.ok, res.status.message
        assert seen[-1] == 1.0 and (tmp_path / name / "inputs" / f"{view_stem(2, cams[2].name)}.png").exists()
        strips = ce.apply_as_strips(scene, cams, res.folder)
        assert set(strips.images) == {c.name for i, c in enumerate(cams) if i != 2}


def test_blend_relative_job_folders_and_the_scene_named_is_the_scene_rendered(addon, empty_scene, tmp_path):
    """'//jobs/x' once became /jobs/x at the filesystem root; an unsaved file used the process's working
    directory; and a non-active scene's views were rendered from the active scene."""
    import tempfile

    ce = importlib.import_module("coupled_edit.api")
    paths = importlib.import_module("coupled_edit.scene_io.paths")
    assert paths.resolve_folder("//jobs/x") == (Path(tempfile.gettempdir()) / "coupled_edit/jobs/x").resolve()  # unsaved
    active = bpy.context.scene  # empty: nothing to see
    other = bpy.data.scenes.new("product")
    other.render.engine = "CYCLES"
    other.cycles.samples, other.cycles.use_denoising = 1, False
    other.render.resolution_x = other.render.resolution_y = 32
    mesh = bpy.data.meshes.new("box")
    import bmesh

    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)
    bm.to_mesh(mesh)
    other.collection.objects.link(bpy.data.objects.new("box", mesh))
    bpy.context.window.scene = other
    cams = ce.build_turntable(bpy.context, [other.objects["box"]], count=2)
    bpy.context.window.scene = active
    (tmp_path / "proj").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "proj/shot.blend"))
    active, other = bpy.context.scene, bpy.data.scenes["product"]
    active_path = active.render.filepath
    cams = [other.objects[c.name] for c in cams]
    folder = ce.export_rig(other, cams, "//jobs/x", "novel_views", render=[True, False])
    assert folder == (tmp_path / "proj/jobs/x").resolve() and not Path("/jobs/x").exists()
    spec = json.loads((folder / "job.json").read_text())
    alpha = np.asarray(Image.open(folder / "inputs" / spec["views"][0]["image"]))[..., 3]
    assert (alpha > 0).mean() > 0.05  # the product scene's box, not the empty active scene
    assert bpy.context.scene == active and active.render.filepath == active_path


def test_cameras_whose_names_slug_alike_keep_their_own_files_and_strips(addon, empty_scene, tmp_path):
    """'Cam 1', 'Cam_1', 'CAM 1', '前', '後' once shared input and output files: the job said done and
    one image was put on two cameras."""
    ce, scene, cams = _monkey_turntable(5)
    for cam, name in zip(cams, ["Cam 1", "Cam_1", "CAM 1", "前", "後"], strict=True):
        cam.name = name
    assert [c.name for c in cams] == ["Cam 1", "Cam_1", "CAM 1", "前", "後"]
    res = ce.run(scene, cams, "novel_views", tmp_path / "job", render=[True, True, True, False, False], models={"multiview": "seva-tiny"},
                 sampling={"steps": 1}, multiview={"size": 64, "window": 6})  # fmt: skip
    assert res.ok, res.status.message
    inputs = sorted(p.name for p in (res.folder / "inputs").glob("*.png"))
    assert inputs == ["000_Cam_1.png", "001_Cam_1.png", "002_CAM_1.png"]
    result = json.loads((res.folder / "result.json").read_text())
    outputs = {o["view"]: o["path"] for o in result["outputs"] if o["view"]}
    assert outputs == {"前": "outputs/003.png", "後": "outputs/004.png"}
    strips = ce.apply_as_strips(scene, cams, res.folder)
    for name in ("前", "後"):
        img = bpy.data.images[strips.images[name]]
        px = np.array(img.pixels[:], dtype=np.float32).reshape(32, 32, 4)[::-1, :, :3]
        own = np.asarray(Image.open(res.folder / outputs[name]).convert("RGB"), dtype=np.float32) / 255
        assert np.abs(px - own).max() < 1e-4, name


def test_the_progress_bar_climbs_once_over_the_reference_edit_and_every_window(addon, empty_scene, tmp_path):
    """It once read 95 % after the reference edit and fell back at every SEVA window."""
    ce, scene, cams = _monkey_turntable(6)
    seen = []
    res = ce.run(scene, cams, "relight_text", tmp_path / "job", edit={"prompt": "window light"},
                 models={"multiview": "seva-tiny", "editor": "ic-light-tiny"}, sampling={"steps": 3}, multiview={"size": 64, "window": 3},
                 on_progress=lambda st: seen.append((st.stage, st.fraction, st.message)))  # fmt: skip
    assert res.ok, res.status.message
    fractions = [f for _, f, _ in seen]  # as the panel's bar shows them, tick by tick
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # what the bar was fed (the job's log: every event, whichever ticks happened to see them)
    events = [json.loads(line) for line in (res.folder / "log").read_text().splitlines() if line.strip()]
    sampling = [e for e in events if e["stage"] == "sampling"]
    windows = len({e["message"] for e in sampling if e["message"].startswith("window")})
    assert windows >= 3 and {e["total"] for e in sampling} == {3 + 3 * windows}
    after_reference = 0.1 + 0.85 * 3 / (3 + 3 * windows)  # the bar once read 95 % here
    assert all(f <= after_reference + 1e-9 for stage, f, m in seen if stage == "sampling" and m == "reference")


def _monkey_turntable(count: int):
    """The API module, the active scene (Cycles, 1 sample, 32²) and a turntable of ``count`` cameras around a monkey."""
    ce = importlib.import_module("coupled_edit.api")
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising = 1, False
    scene.render.resolution_x = scene.render.resolution_y = 32
    bpy.ops.mesh.primitive_monkey_add()
    return ce, scene, ce.build_turntable(bpy.context, [bpy.data.objects["Suzanne"]], count=count)
