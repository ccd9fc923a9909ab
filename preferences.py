"""Add-on preferences: where the backend runs."""

import bpy


class CoupledEditPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend: bpy.props.EnumProperty(
        name="Backend",
        items=[
            ("SERVER", "Server", "Run models in a separate Python process (local or LAN) over HTTP"),
            ("IN_PROCESS", "In Blender", "Run models inside Blender's Python (torch must import there)"),
        ],
        default="SERVER",
    )
    server_url: bpy.props.StringProperty(name="Server URL", default="http://127.0.0.1:8765")
    server_python: bpy.props.StringProperty(name="Server Python", description="Interpreter with torch + diffusers", subtype="FILE_PATH")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend")
        layout.prop(self, "server_url")
        layout.prop(self, "server_python")


def get(context) -> CoupledEditPreferences:
    return context.preferences.addons[__package__].preferences


def register() -> None:
    bpy.utils.register_class(CoupledEditPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(CoupledEditPreferences)
