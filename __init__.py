"""Coupled Edit: the Blender extension (this file needs bpy to do anything; the backend never imports it).

The repository root is the extension package. Blender imports it as ``bl_ext.<repo>.coupled_edit``;
tests enable it with ``addon_utils.enable`` (see tests/test_extension.py).
"""

try:
    import bpy
except ModuleNotFoundError:  # imported outside Blender: pytest imports the repository root as a package
    bpy = None  # on machines without the bpy wheel (the GPU machine); nothing here is used there

if bpy is not None:
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
