"""Exact camera export from a Blender scene (research/blender.md §2)."""

from __future__ import annotations

import bpy
import numpy as np

from .camera_math import CameraParams, RenderSize, c2w_opencv, intrinsics


class CameraError(ValueError):
    """A camera Coupled Edit cannot use, with what to do about it."""


def render_size(scene: bpy.types.Scene) -> RenderSize:
    r = scene.render
    return RenderSize(r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y)


def camera_params(cam_obj: bpy.types.Object) -> CameraParams:
    if cam_obj.type != "CAMERA":
        raise CameraError(f"{cam_obj.name!r} is a {cam_obj.type.lower()}, not a camera")
    cam = cam_obj.data
    if cam.type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(cam.type, cam.type.lower())
        raise CameraError(f"camera {cam_obj.name!r} is {kind}; Coupled Edit needs perspective cameras (Camera > Lens > Type: Perspective)")
    return CameraParams(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit, cam.shift_x, cam.shift_y)


def camera_matrices(cam_obj: bpy.types.Object, scene: bpy.types.Scene) -> tuple[np.ndarray, np.ndarray]:
    """(K, c2w): 3x3 pixel intrinsics for the scene's render size and 4x4 OpenCV camera-to-world.

    Uses the evaluated world matrix, so parents and constraints count; object scale is ignored
    because it does not change what the camera renders.
    """
    params = camera_params(cam_obj)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = cam_obj.evaluated_get(depsgraph)
    return intrinsics(params, render_size(scene)), c2w_opencv(np.array(evaluated.matrix_world))


def camera_problems(scene: bpy.types.Scene, cameras) -> list[str]:
    """Every camera of a rig that cannot be exported (orthographic, panoramic, mirrored, zero scale, not a
    camera), one message each, so all of them are reported at once before anything renders."""
    problems = []
    for cam in cameras:
        try:
            camera_matrices(cam, scene)
        except ValueError as e:
            problems.append(str(e) if cam.name in str(e) else f"{cam.name}: {e}")
    return problems
