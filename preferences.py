"""Add-on preferences: where model weights live and whether the hub may be reached.

Jobs run in-process (a worker thread of Blender's Python). The separate server backend is a
later issue; its settings are added with it.
"""

import os

import bpy


class CoupledEditPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    model_cache: bpy.props.StringProperty(
        name="Model Cache",
        subtype="DIR_PATH",
        description="Hugging Face cache folder for model weights (empty: the default, HF_HOME or ~/.cache/huggingface)",
    )
    offline: bpy.props.BoolProperty(
        name="Offline",
        default=False,
        description="Never contact the model hub; use only weights already in the cache",
    )

    def draw(self, context):
        self.layout.prop(self, "model_cache")
        self.layout.prop(self, "offline")


def get(context) -> CoupledEditPreferences:
    return context.preferences.addons[__package__].preferences


def apply_environment(context) -> None:
    """Hand the preferences to the backend (huggingface_hub reads these variables)."""
    prefs = get(context)
    if prefs.model_cache:
        os.environ["HF_HOME"] = bpy.path.abspath(prefs.model_cache)
    if prefs.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def register() -> None:
    bpy.utils.register_class(CoupledEditPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(CoupledEditPreferences)
