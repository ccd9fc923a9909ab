"""The add-on as an artist drives it: properties with tooltips, operators, the panel's progress bar."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def ui(cycles_scene):
    bpy.ops.mesh.primitive_monkey_add()
    return cycles_scene


def test_every_property_has_a_tooltip(ui):
    settings = ui.coupled_edit
    props = [p for p in settings.bl_rna.properties if p.identifier not in ("rna_type", "name")]
    assert len(props) >= 10
    assert all(p.description for p in props), [p.identifier for p in props if not p.description]
    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    assert all(p.description for p in prefs.bl_rna.properties if p.identifier not in ("rna_type", "bl_idname"))


def test_relight_from_the_panel(ui, tmp_path):
    s = ui.coupled_edit
    s.turntable_count, s.model, s.editor, s.steps, s.working_size, s.output_dir = 4, "seva-tiny", "ic-light-tiny", 2, 64, str(tmp_path)
    s.task, s.prompt = "relight_text", "snowy soft lighting"
    bpy.data.objects["Suzanne"].select_set(True)
    bpy.ops.coupled_edit.build_turntable()
    assert bpy.ops.coupled_edit.run() == {"FINISHED"}
    job = Path(s.last_job)
    spec = json.loads((job / "job.json").read_text())
    assert spec["task"] == "relight_text" and spec["edit"]["prompt"] == "snowy soft lighting" and all(v["image"] for v in spec["views"])
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "done" and len([o for o in result["outputs"] if o["view"]]) == 4


def test_stylize_from_the_panel(ui, tmp_path):
    s = ui.coupled_edit
    s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = 3, "seva-tiny", 2, 64, str(tmp_path)
    s.task, s.prompt, s.style_base, s.control, s.style_strength = "stylize", "a pencil sketch", "sd-tiny", "lineart", 0.6
    bpy.data.objects["Suzanne"].select_set(True)
    bpy.ops.coupled_edit.build_turntable()
    assert bpy.ops.coupled_edit.run() == {"FINISHED"}
    job = Path(s.last_job)
    spec = json.loads((job / "job.json").read_text())
    assert spec["edit"]["controls"] == [{"kind": "lineart"}] and all(v["depth"] for v in spec["views"])
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "done", result["error"]
    meta = json.loads((job / "outputs/metadata.json").read_text())
    assert meta["editor"]["controls"] == ["lineart"] and meta["editor"]["strength"] == pytest.approx(0.6)


def test_turntable_run_and_apply_from_operators(ui, tmp_path):
    s = ui.coupled_edit
    s.task = "novel_views"
    s.turntable_count, s.model, s.steps, s.working_size = 5, "seva-tiny", 2, 64
    s.output_dir = str(tmp_path)
    bpy.data.objects["Suzanne"].select_set(True)
    assert bpy.ops.coupled_edit.build_turntable() == {"FINISHED"}
    assert s.rig_collection is not None and len(s.rig_collection.objects) == 5
    assert ui.camera == s.rig_collection.objects[0]
    assert bpy.ops.coupled_edit.run("INVOKE_DEFAULT") == {"FINISHED"}  # headless: the synchronous path
    job = Path(s.last_job)
    result = json.loads((job / "result.json").read_text())
    assert job.parent == tmp_path and result["status"] == "done"
    # every view carried its exact depth, so the run scored its own consistency
    assert {o["path"] for o in result["outputs"]} >= {"outputs/consistency.json", "outputs/consistency_heatmaps.png"}
    assert bpy.ops.coupled_edit.apply_strips() == {"FINISHED"}
    assert len([i for i in bpy.data.images if i.name.startswith("CE ")]) == 4
    assert len(ui.sequence_editor.strips) == 4
    # with strips in the sequencer, a new run must still render the cameras, not the strips
    import numpy as np
    from PIL import Image

    first_input = np.asarray(Image.open(next((job / "inputs").glob("*.png"))))
    assert bpy.ops.coupled_edit.run() == {"FINISHED"}
    second = Path(s.last_job)
    assert second != job and np.array_equal(np.asarray(Image.open(next((second / "inputs").glob("*.png")))), first_input)
    for o in bpy.context.selected_objects:
        o.select_set(False)
    bpy.data.objects["Suzanne"].select_set(True)
    assert bpy.ops.coupled_edit.apply_texture(size=128) == {"FINISHED"}
    slot = bpy.data.objects["Suzanne"].material_slots[0]
    assert slot.link == "OBJECT" and slot.material.name.startswith("CE ")


def test_run_without_a_rig_explains(ui):
    ui.coupled_edit.rig_source = "COLLECTION"
    ui.coupled_edit.rig_collection = None
    with pytest.raises(RuntimeError, match="choose the rig's camera collection"):
        bpy.ops.coupled_edit.run()


class Recorder:
    """Stands in for UILayout, which cannot be built headless; records what draw() asks for."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return call


def test_panel_shows_progress_and_cancel_while_a_job_runs(ui, tmp_path):
    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    panel_cls = bpy.types.VIEW3D_PT_coupled_edit
    s = ui.coupled_edit
    s.task = "novel_views"
    s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = 4, "seva-tiny", 2, 64, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    idle = Recorder()
    panel_cls.draw(SimpleNamespace(layout=idle), bpy.context)
    assert ("operator", ("coupled_edit.run",), {"icon": "PLAY"}) in idle.calls
    job = rig_ops.make_job(bpy.context)
    rig_ops.ACTIVE[ui.name] = job
    try:
        job.tick()
        busy = Recorder()
        panel_cls.draw(SimpleNamespace(layout=busy), bpy.context)
        progress = [c for c in busy.calls if c[0] == "progress"]
        assert progress and 0 < progress[0][2]["factor"] <= 1 and progress[0][2]["text"]
        assert ("operator", ("coupled_edit.cancel",), {"icon": "CANCEL"}) in busy.calls
        panels = importlib.import_module("coupled_edit.panels")
        bar = Recorder()
        panels.draw_status_bar(SimpleNamespace(layout=bar), bpy.context)
        assert bar.calls and bar.calls[0][0] == "progress" and bar.calls[0][2]["text"].startswith("Coupled Edit:")
        assert bpy.ops.coupled_edit.cancel() == {"FINISHED"}
        job.run()
        assert job.status.state == "cancelled"
    finally:
        rig_ops.ACTIVE.pop(ui.name, None)


def test_modal_run_ticks_on_timer_and_esc_cancels(ui, tmp_path):
    """The GUI path (invoke + modal) driven with stand-in events, as Blender's event loop would."""
    import types

    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    op_cls = bpy.types.COUPLED_EDIT_OT_run
    s = ui.coupled_edit
    s.task = "novel_views"
    s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = 4, "seva-tiny", 200, 64, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    reports = []
    op = SimpleNamespace(_timer=None, report=lambda kind, msg: reports.append((kind, msg)))
    for name in ("_end", "_report"):
        setattr(op, name, types.MethodType(getattr(op_cls, name), op))
    rig_ops.ACTIVE[ui.name] = rig_ops.make_job(bpy.context)  # what invoke() does, minus the window timer
    timer, esc = SimpleNamespace(type="TIMER"), SimpleNamespace(type="ESC")
    assert op_cls.modal(op, bpy.context, timer) == {"PASS_THROUGH"}  # rendered the view, backend starting
    assert not op_cls.poll(bpy.context)  # one job per scene
    result = op_cls.modal(op, bpy.context, esc)
    while result == {"PASS_THROUGH"}:
        time.sleep(0.05)  # the window timer's interval: never spin, the worker needs the interpreter
        result = op_cls.modal(op, bpy.context, timer)
    assert result == {"CANCELLED"} and ui.name not in rig_ops.ACTIVE
    assert reports[-1][0] == {"WARNING"} and "cancel" in reports[-1][1]


def _modal_op(op_cls, reports):
    import types

    op = SimpleNamespace(_timer=None, report=lambda kind, msg: reports.append((kind, msg)))
    for name in ("_end", "_report"):
        setattr(op, name, types.MethodType(getattr(op_cls, name), op))
    return op


def test_an_error_in_a_tick_ends_the_job_reports_it_and_frees_the_run_button(ui, tmp_path):
    """It once left the job registered (Run greyed out until Blender restarted) with no result.json."""
    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    op_cls = bpy.types.COUPLED_EDIT_OT_run
    s = ui.coupled_edit
    s.task, s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = "novel_views", 3, "seva-tiny", 2, 64, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    view_transform = ui.view_settings.view_transform
    job = rig_ops.make_job(bpy.context)
    rig_ops.ACTIVE[ui.name] = job

    real_step, calls = job.renderer.step, []

    def flaky_render():  # the first view renders (editing settings applied), the second fails
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("GPU driver lost")
        return real_step()

    job.renderer.step = flaky_render
    reports, op, timer = [], _modal_op(op_cls, []), SimpleNamespace(type="TIMER")
    op.report = lambda kind, msg: reports.append((kind, msg))
    assert op_cls.modal(op, bpy.context, timer) == {"PASS_THROUGH"}
    assert ui.view_settings.view_transform == "Standard"  # rendering for editing
    result = op_cls.modal(op, bpy.context, timer)
    assert result == {"CANCELLED"} and ui.name not in rig_ops.ACTIVE and op_cls.poll(bpy.context)
    assert reports[-1][0] == {"ERROR"} and "GPU driver lost" in reports[-1][1]
    saved = json.loads((job.folder / "result.json").read_text())
    assert saved["status"] == "failed" and "GPU driver lost" in saved["error"]
    assert ui.view_settings.view_transform == view_transform


def test_a_cancelled_export_leaves_a_result_saying_so(ui, tmp_path):
    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    s = ui.coupled_edit
    s.task, s.turntable_count, s.model, s.working_size, s.output_dir = "novel_views", 3, "seva-tiny", 64, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    job = rig_ops.make_job(bpy.context)
    job.cancel()
    assert job.tick() is None and job.status.state == "cancelled"
    assert json.loads((job.folder / "result.json").read_text())["status"] == "cancelled"


def test_opening_a_file_cancels_and_forgets_running_jobs(ui, tmp_path):
    rig_ops = importlib.import_module("coupled_edit.operators.rig_ops")
    s = ui.coupled_edit
    s.task, s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = "novel_views", 3, "seva-tiny", 500, 64, str(tmp_path)
    bpy.ops.coupled_edit.build_turntable()
    job = rig_ops.make_job(bpy.context)
    rig_ops.ACTIVE[ui.name] = job
    while job.status.state == "rendering":
        job.tick()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "other.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "other.blend"))
    assert rig_ops.ACTIVE == {}
    deadline = time.monotonic() + 60
    while job.tick() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status.state == "cancelled"
