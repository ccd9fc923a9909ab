"""Capture Before, Apply as Texture and Start Server from a click: one step per timer tick (Blender stays
responsive), progress in the panel, Esc leaves nothing half-done. Driven with stand-in events, as
Blender's event loop would drive them (test_ui.py does the same for Run)."""

from __future__ import annotations

import importlib
import json
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")

TIMER, ESC = SimpleNamespace(type="TIMER"), SimpleNamespace(type="ESC")


def _op(op_cls, **props):
    """An operator instance stand-in: the class's methods bound to a namespace holding its properties."""
    import types

    reports = []
    op = SimpleNamespace(_timer=None, report=lambda kind, msg: reports.append((kind, msg)), reports=reports, bl_label=op_cls.bl_label,
                         **props)  # fmt: skip
    for name in ("start", "finished", "_stop", "modal"):
        setattr(op, name, types.MethodType(getattr(op_cls, name), op))
    return op


def _begin(op, stepwise):
    stepwise.TASKS[bpy.context.scene.name] = op.start(bpy.context)  # what invoke() does, minus the window timer
    return stepwise.TASKS[bpy.context.scene.name]


@pytest.fixture()
def rig(cycles_scene, tmp_path):
    cycles_scene.render.resolution_x = cycles_scene.render.resolution_y = 32
    bpy.ops.mesh.primitive_cube_add()
    s = cycles_scene.coupled_edit
    s.turntable_count, s.output_dir = 4, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    return cycles_scene


def test_capture_before_renders_a_view_per_tick_and_esc_removes_the_half_capture(rig):
    stepwise = importlib.import_module("coupled_edit.operators.stepwise")
    op_cls = bpy.types.COUPLED_EDIT_OT_capture_before
    op = _op(op_cls)
    task = _begin(op, stepwise)
    assert not op_cls.poll(bpy.context)  # one stepwise task per scene
    fractions = []
    for _ in range(2):
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
        fractions.append(task.fraction)
    assert fractions == [0.25, 0.5] and rig.view_settings.view_transform == "Standard"  # mid-render
    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    assert not task.folder.exists() and rig.view_settings.view_transform != "Standard"  # gone, settings back
    assert op_cls.poll(bpy.context) and rig.coupled_edit.capture_dir == ""
    op = _op(op_cls)
    task = _begin(op, stepwise)
    while (result := op.modal(bpy.context, TIMER)) == {"PASS_THROUGH"}:
        pass
    assert result == {"FINISHED"} and (Path(rig.coupled_edit.capture_dir) / "capture.json").exists()
    assert "captured 4 views" in op.reports[-1][1]


def test_apply_as_texture_bakes_a_step_per_tick_and_esc_changes_nothing(rig, tmp_path):
    stepwise = importlib.import_module("coupled_edit.operators.stepwise")
    export = importlib.import_module("coupled_edit.scene_io.export")
    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    cams = rig_ops.rig_cameras(bpy.context)
    folder = export.export_rig(rig, cams, tmp_path / "job", "novel_views", passes=True)
    (folder / "result.json").write_text(json.dumps({"job_id": "job", "status": "done", "outputs": [], "metadata": {}}))
    rig.coupled_edit.last_job = str(folder)
    cube = bpy.data.objects["Cube"]
    for o in bpy.context.selected_objects:
        o.select_set(False)
    cube.select_set(True)
    before = (set(bpy.data.materials.keys()), set(bpy.data.images.keys()), list(cube.data.uv_layers.keys()))
    op_cls = bpy.types.COUPLED_EDIT_OT_apply_texture
    op = _op(op_cls, size=64, shading="EMISSION")
    task = _begin(op, stepwise)
    for _ in range(3):
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    assert 0 < task.fraction < 1 and "baking Cube" in task.message
    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    assert (set(bpy.data.materials.keys()), set(bpy.data.images.keys()), list(cube.data.uv_layers.keys())) == before
    op = _op(op_cls, size=64, shading="EMISSION")
    _begin(op, stepwise)
    while (result := op.modal(bpy.context, TIMER)) == {"PASS_THROUGH"}:
        pass
    assert result == {"FINISHED"} and cube.material_slots[0].material.name.startswith("CE job")


def test_start_server_polls_per_tick_and_esc_stops_the_child(cycles_scene, tmp_path):
    stepwise = importlib.import_module("coupled_edit.operators.stepwise")
    server_ops = importlib.import_module("coupled_edit.operators.server_ops")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    prefs.server_url, prefs.server_python, prefs.server_jobs_dir = f"http://127.0.0.1:{port}", sys.executable, str(tmp_path / "jobs")
    op_cls = bpy.types.COUPLED_EDIT_OT_start_server
    op = _op(op_cls)
    task = _begin(op, stepwise)
    assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}  # a tick returns at once: the child is still importing
    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    assert task.proc.poll() is not None and "proc" not in server_ops.SERVER
    op = _op(op_cls)
    task = _begin(op, stepwise)
    t0, ticks = time.monotonic(), 0
    try:
        while (result := op.modal(bpy.context, TIMER)) == {"PASS_THROUGH"}:
            ticks += 1
            assert time.monotonic() - t0 < 120
        assert result == {"FINISHED"} and ticks > 1 and server_ops.SERVER["proc"] is task.proc
        assert f"running at http://127.0.0.1:{port}" in op.reports[-1][1]
    finally:
        bpy.ops.coupled_edit.stop_server()
