"""Blender camera -> OpenCV pinhole, as plain arithmetic (no bpy: testable anywhere).

Pixel centres at i + 0.5 (SEVA's Plücker convention). Verified against Blender's own projection
(``calc_matrix_camera`` at the truncated render size) in tests/blender/test_camera_export.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera axes: y up, -z forward -> y down, z forward


@dataclass(frozen=True)
class CameraParams:
    lens: float  # mm
    sensor_width: float
    sensor_height: float
    sensor_fit: str  # AUTO, HORIZONTAL, VERTICAL
    shift_x: float = 0.0
    shift_y: float = 0.0


@dataclass(frozen=True)
class RenderSize:
    resolution_x: int
    resolution_y: int
    percentage: int = 100
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0

    @property
    def pixels(self) -> tuple[int, int]:
        """The size the renderer really uses: truncated after the percentage."""
        s = self.percentage / 100
        return int(self.resolution_x * s), int(self.resolution_y * s)


def intrinsics(cam: CameraParams, size: RenderSize) -> np.ndarray:
    """3x3 pixel K of a perspective camera for the rendered (truncated) image size."""
    W, H = size.pixels
    ax, ay = size.pixel_aspect_x, size.pixel_aspect_y
    fit = cam.sensor_fit
    sensor = cam.sensor_height if fit == "VERTICAL" else cam.sensor_width  # AUTO uses the width
    if fit == "AUTO":
        fit = "HORIZONTAL" if ax * W >= ay * H else "VERTICAL"
    view = ax * W if fit == "HORIZONTAL" else ay * H  # the fitted dimension, in x-pixel units
    fx = cam.lens / sensor * view / ax
    fy = cam.lens / sensor * view / ay
    cx = W / 2 - cam.shift_x * view / ax  # shifts are fractions of the fitted dimension
    cy = H / 2 + cam.shift_y * view / ay
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def c2w_opencv(matrix_world: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world from Blender's object matrix; object scale is dropped (it does not render)."""
    m = np.asarray(matrix_world, dtype=np.float64)
    R = m[:3, :3]
    det = np.linalg.det(R)
    if abs(det) < 1e-12:
        raise ValueError("camera object has zero scale on an axis; its orientation is undefined")
    if det < 0:
        raise ValueError("camera object is mirrored (negative scale); apply or remove the negative scale")
    U, _, Vt = np.linalg.svd(R)  # nearest rotation: drops scale, and shear from scaled parents
    out = np.eye(4)
    out[:3, :3] = U @ Vt
    out[:3, 3] = m[:3, 3]
    return out @ BLENDER_TO_OPENCV


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2), x right, y down, pixel i covers [i, i+1)."""
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:3]
