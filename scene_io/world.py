"""The scene's World as Neural Gaffer lighting (research/neuralgaffer.md §3.9).

Supported: World Output <- Background (its Strength) <- Environment Texture (equirectangular)
<- optional Mapping (type POINT or TEXTURE, rotation only) <- optional Texture Coordinate
"Generated". The map is written into the job's inputs: an .hdr/.exr on disk is copied byte for
byte, anything else (packed, generated) is written from its float pixels as OpenEXR.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import bpy


class WorldError(ValueError):
    pass


@dataclass
class WorldLighting:
    image: bpy.types.Image
    rotation: tuple[float, float, float]  # Euler XYZ for the job (POINT semantics)
    strength: float


def _linked(socket):
    return socket.links[0].from_node if socket.is_linked else None


def world_lighting(scene: bpy.types.Scene) -> WorldLighting:
    world = scene.world
    if world is None or not world.use_nodes or world.node_tree is None:
        raise WorldError("the scene has no World with nodes: add one with an Environment Texture, or choose an environment map file")
    out = next((n for n in world.node_tree.nodes if n.type == "OUTPUT_WORLD" and n.is_active_output), None)
    bg = _linked(out.inputs["Surface"]) if out else None
    if bg is None or bg.type != "BACKGROUND":
        raise WorldError("the World Output is not fed by a Background node; connect Environment Texture > Background > World Output")
    env = _linked(bg.inputs["Color"])
    if env is None or env.type != "TEX_ENVIRONMENT" or env.image is None:
        raise WorldError("the World's Background colour does not come from an Environment Texture with an image; add one (an .hdr or .exr)")
    if env.projection != "EQUIRECTANGULAR":
        kind = env.projection.replace("_", " ").lower()
        raise WorldError(f"the Environment Texture uses {kind} projection; Neural Gaffer needs equirectangular")
    rotation = (0.0, 0.0, 0.0)
    mapping = _linked(env.inputs["Vector"])
    if mapping is not None:
        if mapping.type != "MAPPING":
            raise WorldError(f"the Environment Texture's vector comes from {mapping.name!r}; only a Mapping node (or nothing) is supported")
        loc, scale = mapping.inputs["Location"].default_value, mapping.inputs["Scale"].default_value
        if any(abs(v) > 1e-6 for v in loc) or max(scale) - min(scale) > 1e-6:
            raise WorldError("the World's Mapping node has a location or non-uniform scale; only its rotation is supported")
        rot = mapping.inputs["Rotation"].default_value
        if mapping.vector_type == "POINT":
            rotation = (rot[0], rot[1], rot[2])
        elif mapping.vector_type == "TEXTURE":  # the inverse rotation, as an Euler XYZ
            e = rot.to_matrix().transposed().to_euler("XYZ")
            rotation = (e.x, e.y, e.z)
        else:
            raise WorldError(f"Mapping type {mapping.vector_type} is not supported for the World; use Point or Texture")
    strength = bg.inputs["Strength"].default_value
    if bg.inputs["Strength"].is_linked:
        raise WorldError("the Background strength is driven by a node; set it to a number")
    return WorldLighting(env.image, rotation, float(strength))


def export_envmap(image: bpy.types.Image, folder: Path, name: str = "world_envmap") -> str:
    """The World's map into ``folder``; returns the file name used in the job."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(bpy.path.abspath(image.filepath)) if image.filepath else None
    if image.packed_file is None and path is not None and path.suffix.lower() in (".hdr", ".exr") and path.is_file():
        dest = folder / f"{name}{path.suffix.lower()}"
        shutil.copyfile(path, dest)
        return dest.name
    import numpy as np

    from .render import _openimageio

    w, h = image.size
    if w == 0 or h == 0:
        raise WorldError(f"the environment image {image.name!r} has no pixels (missing file?)")
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    rgb = px.reshape(h, w, image.channels)[::-1, :, :3].copy()  # Blender stores the bottom row first
    oiio = _openimageio()
    dest = folder / f"{name}.exr"
    out = oiio.ImageOutput.create(str(dest))
    out.open(str(dest), oiio.ImageSpec(w, h, 3, oiio.FLOAT))
    out.write_image(rgb)
    out.close()
    return dest.name


def envmap_edit(scene: bpy.types.Scene, folder: Path, spin: int = 0, spin_total: int = 120, composite: str = "envmap") -> dict:
    """The ``edit`` section of a relight_envmap job from the scene's World (the map written into inputs/)."""
    wl = world_lighting(scene)
    return _edit(export_envmap(wl.image, Path(folder) / "inputs"), wl.rotation, wl.strength, spin, spin_total, composite)


def file_edit(
    path: str, folder: Path, rotation=(0.0, 0.0, 0.0), strength: float = 1.0, spin: int = 0, spin_total: int = 120, composite="envmap"
) -> dict:
    """The ``edit`` section from an environment map file (copied into inputs/)."""
    src = Path(bpy.path.abspath(path))
    if not src.is_file():
        raise WorldError(f"environment map {path!r} not found")
    dest = Path(folder) / "inputs" / f"envmap{src.suffix.lower()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return _edit(dest.name, rotation, strength, spin, spin_total, composite)


def _edit(name: str, rotation, strength: float, spin: int, spin_total: int, composite: str) -> dict:
    return {"envmap": name, "envmap_rotation": [float(r) for r in rotation], "envmap_strength": float(strength), "spin": spin,
            "spin_total": spin_total, "composite": composite}  # fmt: skip
