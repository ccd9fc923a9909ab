"""N-panel: View3D > Sidebar > Coupled Edit."""

import bpy

from .. import preferences
from ..operators import rig_ops, stepwise


class VIEW3D_PT_coupled_edit(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Coupled Edit"
    bl_label = "Coupled Edit"

    def draw(self, context):
        layout = self.layout
        s = context.scene.coupled_edit
        box = layout.box()
        box.label(text="Rig", icon="CAMERA_DATA")
        box.prop(s, "rig_source")
        if s.rig_source == "COLLECTION":
            box.prop(s, "rig_collection")
        box.prop(s, "use_photos")
        row = box.row(align=True)
        row.prop(s, "turntable_count")
        row.prop(s, "turntable_elevation")
        box.prop(s, "turntable_lens")
        box.operator("coupled_edit.build_turntable", icon="CON_ROTLIKE")
        box = layout.box()
        box.label(text="Task", icon="SHADERFX")
        box.prop(s, "task")
        if s.task == "relight_text":
            box.prop(s, "prompt")
            box.prop(s, "editor")
            box.prop(s, "strength")
        elif s.task == "spatial_edit":
            box.prop(s, "fixup")
            box.operator("coupled_edit.capture_before", icon="RESTRICT_RENDER_OFF")
            if s.capture_dir:
                box.label(text=f"Captured: {bpy.path.basename(s.capture_dir.rstrip('/'))}", icon="CHECKMARK")
            box.prop(s, "only_selected")
            box.prop(s, "strength")
        elif s.task == "relight_envmap":
            box.prop(s, "gaffer")
            box.prop(s, "envmap_source")
            if s.envmap_source == "FILE":
                box.prop(s, "envmap_file")
                row = box.row(align=True)
                row.prop(s, "envmap_rotation")
                row.prop(s, "envmap_strength")
            box.prop(s, "spin")
            box.prop(s, "composite")
            box.prop(s, "strength")
        elif s.task == "stylize":
            box.prop(s, "prompt")
            box.prop(s, "style_base")
            box.prop(s, "control")
            box.prop(s, "style_strength")
            box.prop(s, "strength")
        for name in ("model", "steps", "guidance", "seed", "working_size", "output_dir"):
            box.prop(s, name)
        job = rig_ops.ACTIVE.get(context.scene.name)
        if job is not None:
            st = job.status
            eta = f", {st.eta_s:.0f} s left" if st.eta_s else ""
            layout.progress(factor=st.fraction, type="BAR", text=f"{st.message}{eta}")
            layout.operator("coupled_edit.cancel", icon="CANCEL")
        else:
            layout.operator("coupled_edit.run", icon="PLAY")
        task = stepwise.TASKS.get(context.scene.name)
        if task is not None:  # Capture Before, Apply as Texture or Start Server in progress
            layout.progress(factor=task.fraction, type="BAR", text=task.message)
            layout.operator("coupled_edit.cancel_task", icon="CANCEL")
        if s.last_job:
            box = layout.box()
            box.label(text="Last result", icon="IMAGE_DATA")
            box.operator("coupled_edit.apply_strips", icon="SEQUENCE")
            box.operator("coupled_edit.apply_texture", icon="TEXTURE")
        try:
            from ..backend import model_needs

            keys = model_needs.job_model_keys(s.task, _task_models(s), {"controls": [{"kind": s.control}]} if s.task == "stylize" else None)
        except (KeyError, ValueError):
            keys = []
        if keys:
            box = layout.box()
            box.label(text="Models", icon="FILE_BLEND")
            preferences.draw_models(box, context, keys)
        prefs = preferences.get(context)
        if prefs.offline:
            layout.label(text="Offline: cached weights only", icon="INTERNET_OFFLINE")
        layout.operator("coupled_edit.check_backend", icon="CHECKMARK")


def _task_models(s) -> dict:
    """The models section the panel's task would send (as operators/rig_ops.make_job builds it)."""
    editor = {"relight_text": s.editor, "relight_envmap": s.gaffer, "stylize": s.style_base, "spatial_edit": s.fixup}.get(s.task)
    return {"multiview": s.model} | ({"editor": editor} if editor else {})


def draw_status_bar(self, context) -> None:
    """A progress bar in the status bar while a job runs (Blender's own progress shows only in the cursor)."""
    job = rig_ops.ACTIVE.get(context.scene.name)
    if job is not None:
        self.layout.progress(factor=job.status.fraction, type="BAR", text=f"Coupled Edit: {job.status.message}")
    task = stepwise.TASKS.get(context.scene.name)
    if task is not None:
        self.layout.progress(factor=task.fraction, type="BAR", text=f"Coupled Edit: {task.message}")


def register() -> None:
    bpy.utils.register_class(VIEW3D_PT_coupled_edit)
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    bpy.utils.unregister_class(VIEW3D_PT_coupled_edit)
