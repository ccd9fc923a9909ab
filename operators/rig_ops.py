"""Operators on the rig and its jobs; the work lives in ``scene_io`` (operators stay thin)."""

import json
import time
from pathlib import Path

import bpy

from .. import preferences
from ..scene_io import capture, jobs, paths, project, rigs, world, writeback
from . import stepwise

# the running job per scene (runtime state, never saved in the .blend)
ACTIVE: dict[str, jobs.RigJob] = {}


@bpy.app.handlers.persistent
def cancel_jobs_on_load(*_args) -> None:
    """File > Open: the jobs belong to the scenes being closed; stop them (between two steps) and forget them."""
    for job in list(ACTIVE.values()):
        job.cancel()
    ACTIVE.clear()
    stepwise.cancel_all()


def rig_cameras(context) -> list:
    s = context.scene.coupled_edit
    if s.rig_source == "SELECTED":
        return rigs.rig_from_selection(context)
    if s.rig_collection is None:
        raise ValueError("choose the rig's camera collection, or build a turntable first")
    return rigs.rig_from_collection(s.rig_collection)


def new_job_folder(context) -> Path:
    base = paths.resolve_folder(context.scene.coupled_edit.output_dir or "//coupled_edit")  # unsaved: the temp folder
    folder = base / time.strftime("job-%Y%m%d-%H%M%S")
    n = 1
    while folder.exists():
        folder = folder.with_name(f"{folder.name.split('_')[0]}_{n}")
        n += 1
    return folder


def make_job(context) -> jobs.RigJob:
    preferences.apply_environment(context)
    s = context.scene.coupled_edit
    if s.task == "spatial_edit":
        return make_spatial_job(context)
    cams = rig_cameras(context)
    ref = rigs.reference_index(cams, context.scene)
    if s.task == "relight_text":  # every view is edited
        render, extra = [True] * len(cams), {"edit": {"prompt": s.prompt}, "models": {"multiview": s.model, "editor": s.editor}}
        sampling = {"steps": s.steps, "cfg_multiview": s.guidance, "seed": s.seed, "lam": s.strength}
    elif s.task == "relight_envmap":
        folder = new_job_folder(context)
        spin = (round(s.spin / (2 * 3.141592653589793) * 3600) % 3600, 3600)  # the spin in tenths of a degree
        if s.envmap_source == "WORLD":
            edit = world.envmap_edit(context.scene, folder, *spin, composite=s.composite)
        else:
            edit = world.file_edit(s.envmap_file, folder, (0.0, 0.0, s.envmap_rotation), s.envmap_strength, *spin, composite=s.composite)
        render, extra = [True] * len(cams), {"edit": edit, "models": {"multiview": s.model, "editor": s.gaffer}}
        sampling = {"steps": s.steps, "cfg_multiview": s.guidance, "seed": s.seed, "lam": s.strength}
    elif s.task == "stylize":
        edit = {"prompt": s.prompt, "controls": [{"kind": s.control}], "strength": s.style_strength}
        render, extra = [True] * len(cams), {"edit": edit, "models": {"multiview": s.model, "editor": s.style_base}}
        sampling = {"steps": s.steps, "cfg_multiview": s.guidance, "seed": s.seed, "lam": s.strength}
    else:  # the reference view is the input; the rest are generated
        render, extra = [i == ref for i in range(len(cams))], {"models": {"multiview": s.model}}
        sampling = {"steps": s.steps, "cfg_multiview": s.guidance, "seed": s.seed}
    if preferences.model_paths(context):
        extra["models"]["paths"] = preferences.model_paths(context)
    server = preferences.server(context)
    preflight(context, s.task, extra["models"], extra.get("edit"), s.working_size, server)
    return jobs.RigJob(
        context.scene,
        cams,
        folder if s.task == "relight_envmap" else new_job_folder(context),
        s.task,
        render=render,
        photos=s.use_photos,
        server=server,
        passes=not s.use_photos,  # depth of every view: the job reports multi-view consistency
        sampling=sampling,
        multiview={"size": s.working_size},
        **extra,
    )


def preflight(context, task: str, models: dict, edit: dict | None, size: int, server: dict | None) -> None:
    """Before anything renders: every model the job needs is here (or the panel's Download buttons are
    the way), and the job fits the backend environment's GPU (else which size would)."""
    if server is not None and "managed" not in server:
        return  # a server someone else runs checks its own cache (run_job names what is missing)
    needs = jobs.backend_module("model_needs")
    missing = needs.missing_models(task, models, edit)
    if missing:
        raise ValueError(f"not downloaded yet: {', '.join(missing)}. Download them in the Coupled Edit panel (Models) or the "
                         "add-on preferences, or set a local copy for each")  # fmt: skip
    registry = jobs.backend_module("registry")
    if server is not None and not registry.MODELS[models.get("multiview") or "seva-1.1"].tiny:
        vram = jobs.backend_module("envsetup").env_status(preferences.env_root(context)).get("versions", {}).get("vram_gb")
        if vram:
            advice = jobs.backend_module("preflight").advice(task, size, 21, vram)
            if advice:
                raise ValueError(advice)


def make_spatial_job(context) -> jobs.RigJob:
    """The changes since Capture Before, on the captured views (nothing is rendered now)."""
    s = context.scene.coupled_edit
    cap = paths.resolve_folder(s.capture_dir) if s.capture_dir else None
    if cap is None or not (cap / "capture.json").exists():
        raise ValueError("press Capture Before first, then move, duplicate or delete objects")
    only = {o.name for o in context.selected_objects} if s.only_selected else None
    folder = new_job_folder(context)
    sections = {
        "models": {"multiview": s.model, "editor": s.fixup},
        "sampling": {"steps": s.steps, "cfg_multiview": s.guidance, "seed": s.seed, "lam": s.strength},
        "multiview": {"size": s.working_size},  # Working Size counts here too (it was left out)
    }
    if preferences.model_paths(context):
        sections["models"]["paths"] = preferences.model_paths(context)
    server = preferences.server(context)
    preflight(context, "spatial_edit", sections["models"], None, s.working_size, server)
    capture.spatial_job(cap, context.scene, folder, only, **sections)
    cams = [context.scene.objects[n] for n in json.loads((cap / "capture.json").read_text())["cameras"] if n in context.scene.objects]
    return jobs.RigJob(context.scene, cams, folder, "spatial_edit", prepared=True, server=server)


class COUPLED_EDIT_OT_capture_before(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.capture_before"
    bl_label = "Capture Before"
    bl_description = "Render the rig (colour, depth, object index) and remember where every object is, before you move them"

    def start(self, context):
        s = context.scene.coupled_edit
        folder = new_job_folder(context).with_name(time.strftime("capture-%Y%m%d-%H%M%S"))
        return capture.CaptureJob(context.scene, rig_cameras(context), folder, photos=s.use_photos)

    def finished(self, context, task):
        context.scene.coupled_edit.capture_dir = str(task.folder)
        n = sum(1 for o in task.result["objects"].values() if o["index"] is not None)
        self.report({"INFO"}, f"captured {len(task.cams)} views and {n} objects; now move, duplicate or delete objects and Run")
        return {"FINISHED"}


class COUPLED_EDIT_OT_build_turntable(bpy.types.Operator):
    bl_idname = "coupled_edit.build_turntable"
    bl_label = "Build Turntable"
    bl_description = "Add a ring of cameras around the selected objects (or the origin) in a new collection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = context.scene.coupled_edit
        targets = [o for o in context.selected_objects if o.type not in ("CAMERA", "LIGHT")]
        cams = rigs.build_turntable(context, targets, s.turntable_count, (s.turntable_elevation * 57.29577951308232,), s.turntable_lens)
        s.rig_source, s.rig_collection = "COLLECTION", cams[0].users_collection[0]
        if context.scene.camera is None:
            context.scene.camera = cams[0]
        self.report({"INFO"}, f"{len(cams)} cameras in {s.rig_collection.name!r}")
        return {"FINISHED"}


class COUPLED_EDIT_OT_run(bpy.types.Operator):
    bl_idname = "coupled_edit.run"
    bl_label = "Run"
    bl_description = "Render the rig and run the task; Esc or Cancel stops it and leaves the scene as it was"

    _timer = None

    @classmethod
    def poll(cls, context):
        return context.scene.name not in ACTIVE

    def execute(self, context):  # synchronous: scripts and blender -b
        try:
            job = make_job(context)
        except (ValueError, FileExistsError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        status = job.run()
        return self._report(context, job, status)

    def invoke(self, context, event):
        try:
            job = make_job(context)
        except (ValueError, FileExistsError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        ACTIVE[context.scene.name] = job
        self._timer = context.window_manager.event_timer_add(0.05, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = ACTIVE.get(context.scene.name)
        if job is None:
            return self._end(context, {"CANCELLED"})
        if event.type == "ESC":
            job.cancel()
        if event.type in ("TIMER", "ESC"):
            try:
                job.tick()
            except Exception as e:  # noqa: BLE001 - tick() handles its own errors; this is the last guard
                self.report({"ERROR"}, f"Coupled Edit: {type(e).__name__}: {e}")
                return self._end(context, {"CANCELLED"})
            stepwise.redraw(context)
            if job.status.finished:
                return self._end(context, self._report(context, job, job.status))
        return {"PASS_THROUGH"}

    def _end(self, context, result):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        ACTIVE.pop(context.scene.name, None)
        return result

    def _report(self, context, job, status):
        if status.state == "done":
            context.scene.coupled_edit.last_job = str(job.folder)
            self.report({"INFO"}, f"Coupled Edit: {status.message}; results in {job.folder}")
            return {"FINISHED"}
        self.report({"WARNING"} if status.state == "cancelled" else {"ERROR"}, f"Coupled Edit: {status.message}")
        return {"CANCELLED"}


class COUPLED_EDIT_OT_cancel(bpy.types.Operator):
    bl_idname = "coupled_edit.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running job between two steps; the scene stays as it was"

    @classmethod
    def poll(cls, context):
        return context.scene.name in ACTIVE

    def execute(self, context):
        ACTIVE[context.scene.name].cancel()
        return {"FINISHED"}


class COUPLED_EDIT_OT_apply_strips(bpy.types.Operator):
    bl_idname = "coupled_edit.apply_strips"
    bl_label = "Apply as Strips"
    bl_description = "Add the last job's views as images, camera backgrounds and sequencer strips (undoable)"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return bool(context.scene.coupled_edit.last_job)

    def execute(self, context):
        try:
            res = writeback.apply_as_strips(context.scene, rig_cameras(context), Path(context.scene.coupled_edit.last_job))
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{len(res.images)} views applied (sequencer channel {res.channel})" + "".join(f"; {n}" for n in res.notes))
        return {"FINISHED"}


class COUPLED_EDIT_OT_apply_texture(stepwise.StepwiseOperator, bpy.types.Operator):
    bl_idname = "coupled_edit.apply_texture"
    bl_label = "Apply as Texture"
    bl_description = "Bake the last job's views into a new texture and material on the selected objects (undoable; original materials stay)"
    bl_options = {"REGISTER", "UNDO"}

    size: bpy.props.IntProperty(name="Texture Size", default=1024, min=64, max=8192, description="Side of the baked texture in pixels")
    shading: bpy.props.EnumProperty(
        name="Shading",
        items=[
            ("EMISSION", "Emission", "Shows exactly the edited colours, unlit"),
            ("BASE_COLOR", "Base Color", "Lit by the scene like a normal material"),
        ],
        description="How the new material uses the baked texture",
    )

    @classmethod
    def poll(cls, context):
        return (
            bool(context.scene.coupled_edit.last_job)
            and any(o.type == "MESH" for o in context.selected_objects)
            and super().poll(context)
        )

    def start(self, context):
        objects = [o for o in context.selected_objects if o.type == "MESH"]
        job = Path(context.scene.coupled_edit.last_job)
        gen = project.apply_as_texture_steps(context, objects, rig_cameras(context), job, self.size, self.shading)
        return stepwise.GeneratorSteps(gen, "baking textures")

    def finished(self, context, task):
        res = task.result
        cover = ", ".join(f"{k} {v:.0%}" for k, v in res.coverage.items())
        self.report({"INFO"}, f"textures baked (seen by the views: {cover})" + "".join(f"; {n}" for n in res.notes))
        return {"FINISHED"}
