"""Operators stay thin: they gather scene state, call pure functions, and report."""

import bpy

from . import check_backend

_classes = (check_backend.COUPLED_EDIT_OT_check_backend,)


def register() -> None:
    for c in _classes:
        bpy.utils.register_class(c)


def unregister() -> None:
    for c in reversed(_classes):
        bpy.utils.unregister_class(c)
