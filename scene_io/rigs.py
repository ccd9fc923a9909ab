"""Camera rigs: a collection of cameras, the selected cameras, or a turntable the add-on builds."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import bpy
from mathutils import Vector

RIG_COLLECTION = "Coupled Edit Rig"


def natural_key(name: str) -> list:
    """'cam 2' before 'cam 10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def cameras_of(objects: Iterable[bpy.types.Object]) -> list[bpy.types.Object]:
    return sorted((o for o in objects if o.type == "CAMERA"), key=lambda o: natural_key(o.name))


def rig_from_collection(collection: bpy.types.Collection) -> list[bpy.types.Object]:
    cams = cameras_of(collection.all_objects)
    if not cams:
        raise ValueError(f"collection {collection.name!r} holds no cameras; pick a collection of cameras or build a turntable")
    return cams


def rig_from_selection(context) -> list[bpy.types.Object]:
    cams = cameras_of(context.selected_objects)
    if not cams:
        raise ValueError("no cameras are selected; select the rig's cameras or build a turntable")
    return cams


def reference_index(cameras: Sequence[bpy.types.Object], scene: bpy.types.Scene) -> int:
    """The scene camera when it is part of the rig, else the first camera."""
    return next((i for i, c in enumerate(cameras) if c == scene.camera), 0)


def world_bounds(objects: Iterable[bpy.types.Object], depsgraph) -> tuple[Vector, float]:
    """Centre and radius of the evaluated bounding boxes (modifiers included) of ``objects``."""
    corners = []
    for o in objects:
        ev = o.evaluated_get(depsgraph)
        corners += [ev.matrix_world @ Vector(c) for c in ev.bound_box]
    if not corners:
        return Vector((0.0, 0.0, 0.0)), 1.0
    lo = Vector(tuple(min(c[i] for c in corners) for i in range(3)))
    hi = Vector(tuple(max(c[i] for c in corners) for i in range(3)))
    centre = (lo + hi) / 2
    return centre, max((c - centre).length for c in corners)


def build_turntable(
    context,
    targets: Sequence[bpy.types.Object] = (),
    count: int = 8,
    elevations_deg: Sequence[float] = (20.0,),
    lens: float = 50.0,
    radius: float | None = None,
    margin: float = 1.15,
    name: str = RIG_COLLECTION,
) -> list[bpy.types.Object]:
    """Cameras on circles around ``targets`` (or the origin), ordered along the trajectory.

    Without ``radius``, the distance frames the targets' bounding sphere with ``margin`` for the
    scene's render aspect. Creates a new collection; nothing else in the scene changes.
    """
    if count < 1:
        raise ValueError("a turntable needs at least one camera")
    scene = context.scene
    depsgraph = context.evaluated_depsgraph_get()
    centre, extent = world_bounds([t for t in targets if t.type not in ("CAMERA", "LIGHT")], depsgraph)
    coll = bpy.data.collections.new(name)
    scene.collection.children.link(coll)
    cams = []
    for e_deg in elevations_deg:
        for k in range(count):
            data = bpy.data.cameras.new(f"{coll.name} {len(cams):02d}")
            data.lens = lens
            cam = bpy.data.objects.new(data.name, data)
            coll.objects.link(cam)
            if radius is None:
                # the narrower field of view must hold the bounding sphere
                r = scene.render
                w, h = r.resolution_x * r.pixel_aspect_x, r.resolution_y * r.pixel_aspect_y
                half = (
                    math.atan(data.sensor_width / 2 / lens)
                    if data.sensor_fit in ("AUTO", "HORIZONTAL")
                    else math.atan(data.sensor_height / 2 / lens)
                )
                half_narrow = math.atan(math.tan(half) * min(w, h) / max(w, h)) if data.sensor_fit == "AUTO" else half
                dist = extent * margin / math.sin(half_narrow)
            else:
                dist = radius
            theta, e = 2 * math.pi * k / count, math.radians(e_deg)
            cam.location = centre + dist * Vector((math.cos(e) * math.cos(theta), math.cos(e) * math.sin(theta), math.sin(e)))
            cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
            cams.append(cam)
    context.view_layer.update()
    return cams
