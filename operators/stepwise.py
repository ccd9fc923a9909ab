"""Long operators that never freeze Blender: one step per timer tick, progress in the panel and the
status bar, Esc (or Cancel) stops them cleanly. ``execute`` runs every step at once, for scripts and
``blender -b``; ``invoke`` (a click in the UI) runs them on a timer.

A task is any object with ``step() -> bool`` (True while steps remain), ``cancel()``, ``fraction``
and ``message``: ``scene_io.capture.CaptureJob``, ``GeneratorSteps`` over the projected-texture bake,
``server_ops.ServerStart``.
"""

from __future__ import annotations

from collections.abc import Generator

import bpy

# the running stepwise task per scene (runtime state, never saved in the .blend)
TASKS: dict[str, object] = {}
ERRORS = (ValueError, FileExistsError, FileNotFoundError, RuntimeError, OSError, TimeoutError)


class GeneratorSteps:
    """A generator yielding (done, total, message) as a task; its return value becomes ``result``.
    Cancel closes it, which runs its clean-up (the bake undoes everything it had started)."""

    def __init__(self, gen: Generator, message: str) -> None:
        self.gen, self.message, self.fraction, self.result = gen, message, 0.0, None

    def step(self) -> bool:
        try:
            done, total, self.message = next(self.gen)
        except StopIteration as finished:
            self.result, self.fraction = finished.value, 1.0
            return False
        self.fraction = done / max(total, 1)
        return True

    def cancel(self) -> None:
        self.gen.close()


class StepwiseOperator:
    """Mix into a ``bpy.types.Operator``; define ``start(context) -> task`` and ``finished(context, task) -> set``."""

    _timer = None

    @classmethod
    def poll(cls, context):
        return context.scene.name not in TASKS

    def start(self, context):
        raise NotImplementedError

    def finished(self, context, task) -> set[str]:
        raise NotImplementedError

    def execute(self, context):
        try:
            task = self.start(context)
            while task.step():
                pass
        except ERRORS as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return self.finished(context, task)

    def invoke(self, context, event):
        try:
            task = self.start(context)
        except ERRORS as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        TASKS[context.scene.name] = task
        wm = context.window_manager
        if context.window is not None:
            self._timer = wm.event_timer_add(0.02, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        task = TASKS.get(context.scene.name)
        if task is None:  # cancelled from the panel, or the file was closed
            return self._stop(context, {"CANCELLED"})
        if event.type == "ESC":
            task.cancel()
            self.report({"WARNING"}, f"Coupled Edit: {self.bl_label} cancelled; nothing was changed")
            return self._stop(context, {"CANCELLED"})
        if event.type == "TIMER":
            try:
                more = task.step()
            except Exception as e:  # noqa: BLE001 - the task has cleaned up; say what happened
                self.report({"ERROR"}, f"Coupled Edit: {self.bl_label} failed: {e}")
                return self._stop(context, {"CANCELLED"})
            redraw(context)
            if not more:
                return self._stop(context, self.finished(context, task))
        return {"PASS_THROUGH"}

    def _stop(self, context, result: set[str]) -> set[str]:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        TASKS.pop(context.scene.name, None)
        redraw(context)
        return result


class COUPLED_EDIT_OT_cancel_task(bpy.types.Operator):
    bl_idname = "coupled_edit.cancel_task"
    bl_label = "Cancel"
    bl_description = "Stop the running capture, bake or server start; nothing half-done is left behind"

    @classmethod
    def poll(cls, context):
        return context.scene.name in TASKS

    def execute(self, context):
        task = TASKS.pop(context.scene.name)
        task.cancel()
        return {"FINISHED"}


def cancel_all() -> None:
    """File > Open: stop every stepwise task."""
    for task in list(TASKS.values()):
        task.cancel()
    TASKS.clear()


def redraw(context) -> None:
    """Progress shows in the 3D view's panel, the preferences and the status bar: repaint them."""
    wm = context.window_manager
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES", "STATUSBAR"):
                area.tag_redraw()
