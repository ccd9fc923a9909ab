"""Spatial edits from the panel: Capture Before, move and duplicate an object, Run (tiny models), write back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def scene(cycles_scene):
    cycles_scene.render.resolution_x = cycles_scene.render.resolution_y = 48
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0.5))
    bpy.ops.mesh.primitive_plane_add(size=6.0)
    return cycles_scene


def test_capture_move_duplicate_run_and_write_back(scene, tmp_path):
    s = scene.coupled_edit
    s.task, s.fixup, s.model, s.steps, s.working_size, s.output_dir = "spatial_edit", "magicfixup-tiny", "seva-tiny", 2, 64, str(tmp_path)
    s.turntable_count = 4
    cube = bpy.data.objects["Cube"]
    cube.select_set(True)
    bpy.ops.coupled_edit.build_turntable()
    with pytest.raises(RuntimeError, match="Capture Before first"):
        bpy.ops.coupled_edit.run()
    assert bpy.ops.coupled_edit.capture_before() == {"FINISHED"}
    cap = Path(s.capture_dir)
    captured = json.loads((cap / "capture.json").read_text())
    assert captured["objects"]["Cube"]["index"] and all(v["depth"] and v["object_index"] for v in captured["spec"]["views"])
    with pytest.raises(RuntimeError, match="no object was moved"):
        bpy.ops.coupled_edit.run()
    cube.location.x += 0.6
    copy = cube.copy()  # shares the mesh: a duplicate
    copy.location = (-1.2, 0.4, 0.5)
    scene.collection.objects.link(copy)  # no view_layer.update(): as docs/spatial_edit.md's script does it
    assert bpy.ops.coupled_edit.run() == {"FINISHED"}
    job = Path(s.last_job)
    spec = json.loads((job / "job.json").read_text())
    assert spec["multiview"]["size"] == 64  # the panel's Working Size (it was ignored for Move Objects)
    actions = {(o["name"], o["action"]) for o in spec["edit"]["objects"]}
    assert actions == {("Cube", "move"), (f"{copy.name} (copy of Cube)", "duplicate")}
    move = next(o for o in spec["edit"]["objects"] if o["action"] == "move")
    assert move["delta"][0][3] == pytest.approx(0.6)
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "done", result.get("error")
    roles = [o["role"] for o in result["outputs"] if o["view"]]
    assert roles.count("coarse_edit") == 4 and roles.count("result") + roles.count("reference_edit") == 4
    assert bpy.ops.coupled_edit.apply_strips() == {"FINISHED"}
    shown = {st.elements[0].filename for st in scene.sequence_editor.strips if st.name.startswith("CE ")}
    results = {Path(o["path"]).name for o in result["outputs"] if o["role"] in ("result", "reference_edit")}
    assert shown and shown <= results  # the Magic Fixup results, never the coarse warps
    assert not (cap / "job.json").exists()  # the capture stays reusable


def test_capture_of_a_photo_rig_takes_colour_from_the_photos(scene, tmp_path):
    import numpy as np
    from coupled_edit.scene_io.capture import capture_before
    from coupled_edit.scene_io.rigs import build_turntable
    from PIL import Image

    cams = build_turntable(bpy.context, [bpy.data.objects["Cube"]], count=3)
    Image.fromarray(np.full((96, 96, 3), (200, 30, 60), np.uint8)).save(tmp_path / "photo.png")
    photo = bpy.data.images.load(str(tmp_path / "photo.png"))
    for cam in cams[:2]:
        bg = cam.data.background_images.new()
        bg.image = photo
    info = capture_before(scene, cams, tmp_path / "cap", photos=True)
    views = info["spec"]["views"]
    first = np.asarray(Image.open(tmp_path / "cap/inputs" / views[0]["image"]))
    assert first.shape == (48, 48, 4) and (first[..., :3] == (200, 30, 60)).all()  # the photo, at the render's size
    third = np.asarray(Image.open(tmp_path / "cap/inputs" / views[2]["image"]))
    assert not (third[..., :3] == (200, 30, 60)).all()  # no photo: the render stays
    depth = np.load(tmp_path / "cap/inputs" / views[0]["depth"])
    assert np.isfinite(depth).any()  # depth and object index from the proxy geometry


def test_a_collection_instance_moves_as_one_object(scene, tmp_path):
    import importlib

    import numpy as np

    ce = importlib.import_module("coupled_edit.api")
    capture = importlib.import_module("coupled_edit.scene_io.capture")
    chair = bpy.data.collections.new("Chair")  # not in the scene: its objects show only through instances
    bpy.ops.mesh.primitive_cube_add(size=0.8)
    seat = bpy.context.active_object
    for c in list(seat.users_collection):
        c.objects.unlink(seat)
    chair.objects.link(seat)
    inst = bpy.data.objects.new("ChairA", None)
    inst.instance_type, inst.instance_collection, inst.location = "COLLECTION", chair, (1.3, 0.0, 0.4)
    scene.collection.objects.link(inst)
    cams = ce.build_turntable(bpy.context, [bpy.data.objects["Cube"]], count=3)
    captured = ce.capture_before(scene, cams, tmp_path / "cap")
    index = captured["objects"]["ChairA"]["index"]
    assert index and seat.pass_index == 0  # the source's index is put back after the pass render
    maps = [np.load(tmp_path / "cap/inputs" / v["object_index"]) for v in captured["spec"]["views"]]
    assert any((m == index).sum() > 10 for m in maps)  # the instance's pixels carry its index
    inst.location.x += 0.5
    changes = capture.object_changes(scene, captured)
    assert [(c["name"], c["action"], c["index"]) for c in changes] == [("ChairA", "move", index)]
    twin = inst.copy()  # Alt+D of the instance: a duplicate of the same collection
    twin.location.y = 1.0
    scene.collection.objects.link(twin)
    assert any(c["action"] == "duplicate" for c in capture.object_changes(scene, captured))
    with pytest.raises(ValueError, match="'Chair' is instanced 2 times"):
        ce.capture_before(scene, cams, tmp_path / "cap2")
