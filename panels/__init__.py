"""N-panel: View3D > Sidebar > Coupled Edit."""

import bpy

from .. import preferences


class VIEW3D_PT_coupled_edit(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Coupled Edit"
    bl_label = "Coupled Edit"

    def draw(self, context):
        layout = self.layout
        prefs = preferences.get(context)
        layout.label(text=f"Backend: {prefs.backend.replace('_', ' ').title()}")
        layout.operator("coupled_edit.check_backend", icon="CHECKMARK")


def register() -> None:
    bpy.utils.register_class(VIEW3D_PT_coupled_edit)


def unregister() -> None:
    bpy.utils.unregister_class(VIEW3D_PT_coupled_edit)
