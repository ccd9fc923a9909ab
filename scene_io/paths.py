"""Folders the user names, made absolute the way Blender users expect."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy


def resolve_folder(folder: str | os.PathLike) -> Path:
    """An absolute folder: ``//x`` is relative to the saved .blend (Blender's convention); in an unsaved
    file ``//`` has no anchor, so it lands under the temp folder (``<tmp>/coupled_edit/x``), never at the
    filesystem root or the process's current directory; other relative paths are taken from the .blend's
    folder when saved, else from the temp folder too."""
    text = os.fspath(folder)
    if text.startswith("//"):
        if bpy.data.filepath:
            return Path(bpy.path.abspath(text)).resolve()
        return (unsaved_root() / text[2:]).resolve()
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    anchor = Path(bpy.path.abspath("//")) if bpy.data.filepath else unsaved_root()
    return (anchor / path).resolve()


def unsaved_root() -> Path:
    return Path(tempfile.gettempdir()) / "coupled_edit"
