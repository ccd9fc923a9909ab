"""Coupled Edit backend: pure Python + torch, never imports bpy (DESIGN §2)."""

__version__ = "0.1.0"
