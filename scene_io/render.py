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
    # the camera's view, not the sequencer's strips (ours included) or the user's compositing
    ("render", "use_sequencer", False),
    ("render", "use_compositing", False),
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


def view_layer_of(scene: bpy.types.Scene) -> bpy.types.ViewLayer:
    """The view layer a render of ``scene`` shows: the window's when ``scene`` is the active one, else its first enabled one."""
    if bpy.context.scene == scene and bpy.context.view_layer is not None:
        return bpy.context.view_layer
    return next((vl for vl in scene.view_layers if vl.use), scene.view_layers[0])


def render_still(scene: bpy.types.Scene) -> None:
    """Render ``scene`` (not whichever scene the window shows) to its own output path."""
    bpy.ops.render.render(write_still=True, scene=scene.name, layer=view_layer_of(scene).name)


def render_view(scene: bpy.types.Scene, camera: bpy.types.Object, path: Path) -> Path:
    """One RGBA PNG of ``camera`` (call inside :func:`editing_render_settings`)."""
    scene.camera = camera
    scene.render.filepath = str(path)
    render_still(scene)
    if not Path(path).exists():
        raise RuntimeError(f"Blender did not write {path}; check the render engine and output permissions")
    return Path(path)


class ViewRenderer:
    """Renders a rig one view per ``step()``; settings restored when done, cancelled or failed.

    Colour is rendered for ``cameras``; with ``passes``, depth/normals/index are rendered for
    them and for ``pass_only`` cameras too (views that will be generated still have geometry).
    """

    def __init__(
        self,
        scene: bpy.types.Scene,
        cameras: Sequence[bpy.types.Object],
        folder: Path,
        names: Sequence[str],
        passes: bool = False,
        objects: Sequence[bpy.types.Object] = (),
        pass_only: Sequence[tuple[bpy.types.Object, str]] = (),
    ) -> None:
        """``objects`` get object-pass indices 1..N; ``pass_only`` holds (camera, file stem) pairs."""
        not_cameras = [c.name for c in [*cameras, *(c for c, _ in pass_only)] if c.type != "CAMERA"]
        if not_cameras:
            raise ValueError(f"not cameras: {not_cameras}; a rig holds camera objects only")
        self.scene, self.cameras, self.folder, self.names = scene, list(cameras), Path(folder), list(names)
        self.done: list[Path] = []
        self.passes_enabled, self.objects = passes, list(objects)
        self.pass_only = list(pass_only) if passes else []
        self.pass_files: dict[str, dict[str, str]] = {}  # camera name -> pass files
        self.object_names: dict[int, str] = {}
        self.steps_done = 0
        self._ctx = None

    @property
    def total(self) -> int:
        return len(self.cameras) + len(self.pass_only)

    @property
    def finished(self) -> bool:
        return self.steps_done == self.total

    def step(self) -> bool:
        """Render the next view; True while views remain."""
        if self.finished:
            return False
        if self._ctx is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._ctx = editing_render_settings(self.scene)
            self._ctx.__enter__()
        i = self.steps_done
        try:
            if i < len(self.cameras):
                cam, stem = self.cameras[i], self.names[i]
                self.done.append(render_view(self.scene, cam, self.folder / f"{stem}.png"))
            else:
                cam, stem = self.pass_only[i - len(self.cameras)]
            if self.passes_enabled:
                with pass_render_settings(self.scene, self.objects) as self.object_names:
                    self.pass_files[cam.name] = render_passes(self.scene, cam, self.folder, stem)
            self.steps_done += 1
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


# --- geometry passes ---------------------------------------------------------------------------

BACKGROUND_DEPTH = 1e9  # Cycles writes 1e10 where no surface is hit; stored as +inf


def _openimageio():
    """Blender's bundled OpenImageIO (on sys.path in the application, beside the bpy wheel's modules)."""
    try:
        import OpenImageIO
    except ImportError:
        import os
        import sys

        sys.path.append(
            os.path.join(
                bpy.utils.resource_path("LOCAL"), "python", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"
            )
        )
        import OpenImageIO
    return OpenImageIO


PASS_ALIASES = {"IndexOB": "Object Index", "Z": "Depth"}  # older pass names -> today's
_CHANNEL_ORDER = {"R": 0, "G": 1, "B": 2, "A": 3, "X": 0, "Y": 1, "Z": 2, "V": 0}


def read_multilayer_exr(path: Path) -> dict:
    """Every pass of a multi-layer EXR as float32 (H, W, C), keyed by pass name ('Depth', 'Normal', ...).

    Blender 5 writes one part per pass (part "ViewLayer.Depth"); Blender 4.x writes a single part
    holding every channel ("ViewLayer.Depth.Z", "ViewLayer.Normal.X", ...): both are grouped by pass."""
    import numpy as np

    oiio = _openimageio()
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise RuntimeError(f"cannot read {path}: {oiio.geterror()}")
    out, i = {}, 0
    try:
        while inp.seek_subimage(i, 0):
            spec = inp.spec()
            pixels = np.asarray(inp.read_image(format="float"), dtype=np.float32).reshape(spec.height, spec.width, -1)
            names = list(spec.channelnames)
            if len(names) > 1 and all(n.count(".") >= 2 for n in names):  # full names: layer.pass.channel
                groups: dict[str, list[tuple[int, int]]] = {}
                for c, n in enumerate(names):
                    prefix, chan = n.rsplit(".", 1)
                    groups.setdefault(prefix.split(".", 1)[-1], []).append((_CHANNEL_ORDER.get(chan, 9), c))
                for name, chans in groups.items():
                    out[PASS_ALIASES.get(name, name)] = pixels[..., [c for _, c in sorted(chans)]]
            else:
                name = spec.get_string_attribute("name").split(".", 1)[-1]
                out[PASS_ALIASES.get(name, name)] = pixels
            i += 1
    finally:
        inp.close()
    return out


@contextlib.contextmanager
def pass_render_settings(scene: bpy.types.Scene, objects: Sequence[bpy.types.Object]) -> Iterator[dict[int, str]]:
    """Cycles, 1 centred sample per pixel (no averaging across edges), depth/normal/index passes,
    multi-layer float EXR; objects get pass indices 1..N. Everything is restored afterwards."""
    vl = view_layer_of(scene)
    ims = scene.render.image_settings
    saved = {
        "engine": scene.render.engine,
        "filter": scene.render.filter_size,
        "samples": scene.cycles.samples,
        "denoise": scene.cycles.use_denoising,
        "passes": (vl.use_pass_z, vl.use_pass_normal, vl.use_pass_object_index),
        "format": (getattr(ims, "media_type", None), ims.file_format, ims.color_depth, ims.color_mode),
        "index": {o.name: o.pass_index for o in _indexed(objects)},
        "filepath": scene.render.filepath,
        "camera": scene.camera,
        "post": (scene.render.use_sequencer, scene.render.use_compositing),
    }
    try:
        scene.render.use_sequencer = scene.render.use_compositing = False
        scene.render.engine = "CYCLES"
        scene.render.filter_size = 0.01
        scene.cycles.samples, scene.cycles.use_denoising = 1, False
        vl.use_pass_z = vl.use_pass_normal = vl.use_pass_object_index = True
        if hasattr(ims, "media_type"):  # Blender 5.0
            ims.media_type = "MULTI_LAYER_IMAGE"
        else:  # 4.x
            ims.file_format = "OPEN_EXR_MULTILAYER"
        ims.color_depth = "32"
        names = {}
        for i, o in enumerate(objects, start=1):
            names[i] = o.name
            # Cycles labels instanced geometry with the source objects' index, so a collection
            # instance passes its index on to what it instances (one instance per collection)
            for target in _instanced(o) or [o]:
                target.pass_index = i
        yield names
    finally:
        for o in _indexed(objects):
            o.pass_index = saved["index"][o.name]
        media, fmt, depth, mode = saved["format"]
        if media is not None:
            ims.media_type = media
        ims.file_format, ims.color_depth, ims.color_mode = fmt, depth, mode
        vl.use_pass_z, vl.use_pass_normal, vl.use_pass_object_index = saved["passes"]
        scene.cycles.samples, scene.cycles.use_denoising = saved["samples"], saved["denoise"]
        scene.render.filter_size = saved["filter"]
        scene.render.engine = saved["engine"]
        scene.render.filepath = saved["filepath"]
        scene.camera = saved["camera"]
        scene.render.use_sequencer, scene.render.use_compositing = saved["post"]


def is_collection_instance(o: bpy.types.Object) -> bool:
    return o.type == "EMPTY" and o.instance_type == "COLLECTION" and o.instance_collection is not None


def _instanced(o: bpy.types.Object) -> list[bpy.types.Object]:
    """The objects a collection instance shows (empty for any other object)."""
    return list(o.instance_collection.all_objects) if is_collection_instance(o) else []


def _indexed(objects: Sequence[bpy.types.Object]) -> list[bpy.types.Object]:
    """Every object whose pass index the pass renders set: the objects, or what their instances show."""
    return list({t.name: t for o in objects for t in (_instanced(o) or [o])}.values())


def render_passes(scene: bpy.types.Scene, camera: bpy.types.Object, folder: Path, name: str) -> dict[str, str]:
    """Planar depth (H, W; +inf on background), world normals (H, W, 3) and object index (H, W)
    of ``camera`` as .npy files in ``folder``; returns {kind: file name}. Call inside
    :func:`pass_render_settings`."""
    import numpy as np

    exr = Path(folder) / f".{name}.passes.exr"
    scene.camera = camera
    scene.render.filepath = str(exr)
    render_still(scene)
    layers = read_multilayer_exr(exr)
    exr.unlink()
    if "Depth" not in layers:
        raise RuntimeError(f"the pass render of {camera.name!r} wrote no depth pass (parts: {sorted(layers)})")
    depth = layers["Depth"][..., 0]
    depth = np.where(depth >= BACKGROUND_DEPTH, np.inf, depth).astype(np.float32)
    files = {"depth": f"{name}.depth.npy", "normal": f"{name}.normal.npy", "object_index": f"{name}.index.npy"}
    np.save(Path(folder) / files["depth"], depth)
    np.save(Path(folder) / files["normal"], layers["Normal"][..., :3].astype(np.float32))
    np.save(Path(folder) / files["object_index"], np.rint(layers["Object Index"][..., 0]).astype(np.int32))
    return files
