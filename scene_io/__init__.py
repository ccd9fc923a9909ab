"""Blender-side scene I/O: camera export, rigs, renders. bpy lives here, never in backend/."""
