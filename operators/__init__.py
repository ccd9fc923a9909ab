"""Operators stay thin: they gather scene state, call scene_io / backend functions, and report."""

import bpy

from . import check_backend, model_ops, rig_ops, server_ops, stepwise

_classes = (
    check_backend.COUPLED_EDIT_OT_check_backend,
    rig_ops.COUPLED_EDIT_OT_build_turntable,
    rig_ops.COUPLED_EDIT_OT_capture_before,
    rig_ops.COUPLED_EDIT_OT_run,
    rig_ops.COUPLED_EDIT_OT_cancel,
    rig_ops.COUPLED_EDIT_OT_apply_strips,
    rig_ops.COUPLED_EDIT_OT_apply_texture,
    server_ops.COUPLED_EDIT_OT_start_server,
    server_ops.COUPLED_EDIT_OT_stop_server,
    server_ops.COUPLED_EDIT_OT_setup_backend,
    server_ops.COUPLED_EDIT_OT_remove_backend,
    stepwise.COUPLED_EDIT_OT_cancel_task,
    model_ops.COUPLED_EDIT_OT_download_model,
    model_ops.COUPLED_EDIT_OT_set_model_path,
    model_ops.COUPLED_EDIT_OT_model_sizes,
)


def register() -> None:
    for c in _classes:
        bpy.utils.register_class(c)
    if rig_ops.cancel_jobs_on_load not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(rig_ops.cancel_jobs_on_load)


def unregister() -> None:
    if rig_ops.cancel_jobs_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(rig_ops.cancel_jobs_on_load)
    server_ops.stop_local_server()  # a server this session started does not outlive the add-on
    server_ops._backend("server.launcher").stop_managed_server()
    for c in reversed(_classes):
        bpy.utils.unregister_class(c)
