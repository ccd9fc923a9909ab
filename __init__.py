"""Coupled Edit: the Blender extension (this file imports bpy; the backend never does).

The repository root is the extension package. Blender imports it as ``bl_ext.<repo>.coupled_edit``;
tests enable it with ``addon_utils.enable`` (see tests/test_extension.py).
"""

import bpy

from . import operators, panels, preferences, properties

_modules = (preferences, properties, operators, panels)


def register() -> None:
    for m in _modules:
        m.register()


def unregister() -> None:
    for m in reversed(_modules):
        m.unregister()


if __name__ == "__main__":  # running the file from Blender's text editor
    assert bpy  # the import above is what makes this file Blender-only
    register()
