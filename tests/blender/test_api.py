"""The scripting API end to end, as docs/scripting.md uses it."""

from __future__ import annotations

import importlib

import pytest

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
