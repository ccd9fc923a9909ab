"""Renders of the rig for editing: exact colour round trip, everything restored afterwards.

Colour for editing is rendered with view transform Standard, look None, exposure 0, gamma 1 and
dither 0, so 8-bit values written back come out unchanged (research/blender.md §4d). Views are
rendered one per call of :meth:`ViewRenderer.step`, so a timer can keep the UI responsive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import bpy

_SETTINGS = (
    ("view_settings", "view_transform", "Standard"),
    ("view_settings", "look", "None"),
    ("view_settings", "exposure", 0.0),
    ("view_settings", "gamma", 1.0),
    ("render", "dither_intensity", 0.0),
    ("render", "film_transparent", True),
    ("render", "filepath", None),
    ("render.image_settings", "file_format", "PNG"),
    ("render.image_settings", "color_mode", "RGBA"),
    ("render.image_settings", "color_depth", "8"),
)


def _owner(scene, path: str):
    obj = scene
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def editing_render_settings(scene: bpy.types.Scene) -> Iterator[None]:
    """Set the editing render settings and the scene camera; put every value back, also on error."""
    saved = [(path, attr, getattr(_owner(scene, path), attr)) for path, attr, _ in _SETTINGS]
    saved_camera = scene.camera
    try:
        for path, attr, value in _SETTINGS:
            if value is not None:
                setattr(_owner(scene, path), attr, value)
        yield
    finally:
        for path, attr, value in reversed(saved):
            setattr(_owner(scene, path), attr, value)
        scene.camera = saved_camera


def render_view(scene: bpy.types.Scene, camera: bpy.types.Object, path: Path) -> Path:
    """One RGBA PNG of ``camera`` (call inside :func:`editing_render_settings`)."""
    scene.camera = camera
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not Path(path).exists():
        raise RuntimeError(f"Blender did not write {path}; check the render engine and output permissions")
    return Path(path)


class ViewRenderer:
    """Renders a rig one view per ``step()``; settings restored when done, cancelled or failed."""

    def __init__(self, scene: bpy.types.Scene, cameras: Sequence[bpy.types.Object], folder: Path, names: Sequence[str]) -> None:
        not_cameras = [c.name for c in cameras if c.type != "CAMERA"]
        if not_cameras:
            raise ValueError(f"not cameras: {not_cameras}; a rig holds camera objects only")
        self.scene, self.cameras, self.folder, self.names = scene, list(cameras), Path(folder), list(names)
        self.done: list[Path] = []
        self._ctx = None

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.cameras)

    def step(self) -> bool:
        """Render the next view; True while views remain."""
        if self._ctx is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._ctx = editing_render_settings(self.scene)
            self._ctx.__enter__()
        i = len(self.done)
        try:
            self.done.append(render_view(self.scene, self.cameras[i], self.folder / f"{self.names[i]}.png"))
        except BaseException:
            self.close()
            raise
        if self.finished:
            self.close()
        return not self.finished

    def close(self) -> None:
        """Restore the scene (idempotent): call on cancel too."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def run(self) -> list[Path]:
        while self.step():
            pass
        return self.done
