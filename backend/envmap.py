"""Environment maps for Neural Gaffer (research/neuralgaffer.md §3): read, rotate into a view,
tone-map, resize, and the background plate a camera sees.

Conventions (those of Blender's Environment Texture node, which the model was trained with):
an H x W equirectangular map, row 0 = top, pixel (i, j) looks along azimuth
phi = pi (1 - 2 (j + .5) / W), elevation pi/2 - pi (i + .5) / H; +Z up, +X at the centre column,
+Y at u = 0.25. A view's rotated map shows camera right at the centre, the view direction at
u = 0.25 and camera up at the top (§3.3). Cameras here are Blender cameras (-Z forward, +Y up);
``blender_rotation`` converts the OpenCV c2w of a job's views. Sampling is bilinear at
``(gx + 1) / 2 * (W - 1)`` without wrap at the seam (grid_sample, align_corners=True): the model
was trained on exactly that, so it is reproduced, not "fixed".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HDR_SUFFIXES = (".hdr", ".exr")
LDR_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
PLATE_FOCAL_MM, PLATE_SENSOR_MM = 35.0, 32.0
CANONICAL = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # A = Rx(90 deg): the "front" camera's frame


class EnvmapError(ValueError):
    pass


def read_envmap(path: str | Path) -> np.ndarray:
    """Linear float32 RGB (H, W, 3), top row first, negatives clamped to 0.

    .hdr/.exr through OpenImageIO; 8-bit images are accepted with a warning (sRGB decoded to
    linear, so the sun is clipped at 1 and the lighting loses its intensity)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDR_SUFFIXES:
        import OpenImageIO as oiio

        inp = oiio.ImageInput.open(str(path))
        if inp is None:
            raise EnvmapError(f"cannot read environment map {path.name}: {oiio.geterror()}")
        try:
            data = inp.read_image(oiio.FLOAT)
        finally:
            inp.close()
        if data is None or data.ndim != 3 or data.shape[2] < 3:
            raise EnvmapError(f"environment map {path.name} needs RGB channels")
        rgb = np.asarray(data[..., :3], dtype=np.float32)
    elif suffix in LDR_SUFFIXES:
        from PIL import Image

        warnings.warn(
            f"{path.name} is an 8-bit image: the lighting keeps its directions but loses its intensity; use .hdr or .exr",
            stacklevel=2,
        )
        srgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
        rgb = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)
    else:
        raise EnvmapError(f"environment map {path.name}: use an equirectangular .hdr or .exr (or, with a warning, .png/.jpg)")
    check_equirect(rgb, path.name)
    return prepare(rgb)


def check_equirect(rgb: np.ndarray, name: str = "environment map") -> None:
    h, w = rgb.shape[:2]
    if w != 2 * h:
        raise EnvmapError(
            f"{name} is {w}x{h}: an equirectangular map is twice as wide as high (mirror balls and cube maps are not supported)"
        )


def prepare(rgb: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """World strength applied, NaN and negative texels to 0 (the reference does not handle them)."""
    out = np.nan_to_num(np.asarray(rgb, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0) * np.float32(strength)
    return np.maximum(out, 0.0)


# --- rotations ----------------------------------------------------------------------------------


def euler_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Blender's Euler XYZ as a matrix: Rz @ Ry @ Rx."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def rot_z(angle: float) -> np.ndarray:
    return euler_xyz(0.0, 0.0, angle)


def blender_rotation(c2w: np.ndarray) -> np.ndarray:
    """The rotation of a Blender camera's matrix_world (which may carry scale, removed here)."""
    R = np.asarray(c2w, dtype=np.float64)[:3, :3]
    return R / np.linalg.norm(R, axis=0, keepdims=True)


def opencv_to_blender(c2w_opencv: np.ndarray) -> np.ndarray:
    """The Blender camera rotation of a job view (OpenCV c2w): y and z axes flipped."""
    return blender_rotation(c2w_opencv) @ np.diag([1.0, -1.0, -1.0])


@dataclass
class Lighting:
    """What turns a world into one view's lighting: the map, its Mapping rotation, strength, spin."""

    envmap: np.ndarray  # (H, W, 3) linear, strength already applied
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # Mapping node (POINT), Euler XYZ radians
    spin_index: int = 0
    spin_total: int = 120

    def effective(self, R_c2w_blender: np.ndarray) -> np.ndarray:
        """Rz(2 pi k / N) @ R_map @ R_c2w: where a camera-frame direction is looked up."""
        spin = rot_z(2 * math.pi * self.spin_index / self.spin_total)
        return spin @ euler_xyz(*self.rotation) @ R_c2w_blender


# --- sampling -------------------------------------------------------------------------------


def pixel_dirs(H: int, W: int) -> np.ndarray:
    u = (np.arange(W, dtype=np.float32) + 0.5) / W
    v = (np.arange(H, dtype=np.float32) + 0.5) / H
    phi = np.pi * (1 - 2 * u)[None, :]
    elev = (np.pi / 2 - np.pi * v)[:, None]
    return np.stack(np.broadcast_arrays(np.cos(elev) * np.cos(phi), np.cos(elev) * np.sin(phi), np.sin(elev)), axis=-1).astype(np.float32)


def lookup_dirs(R_eff: np.ndarray, H: int, W: int) -> np.ndarray:
    """World lookup direction of every output pixel: R_eff @ (d.x, d.z, -d.y)."""
    d = pixel_dirs(H, W).astype(np.float64)
    cam = np.stack([d[..., 0], d[..., 2], -d[..., 1]], axis=-1)  # A^T d
    return cam @ np.asarray(R_eff, dtype=np.float64).T


def sample(envmap: np.ndarray, L: np.ndarray, clip: bool = True) -> np.ndarray:
    """Bilinear lookup at directions L (..., 3), exactly as grid_sample(align_corners=True), no seam wrap."""
    H, W = envmap.shape[:2]
    if clip:
        L = np.clip(L, -1.0, 1.0)
    theta = np.arccos(np.clip(L[..., 2], -1.0, 1.0)) - 1e-6
    phi = np.arctan2(L[..., 1], L[..., 0])
    gx = np.clip(-phi / np.pi, -1.0, 1.0).astype(np.float32)
    gy = np.clip(2 * theta / np.pi - 1.0, -1.0, 1.0).astype(np.float32)
    x = (gx.astype(np.float64) + 1) / 2 * (W - 1)
    y = (gy.astype(np.float64) + 1) / 2 * (H - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    E = envmap.astype(np.float64)

    def tap(yi, xi):
        inside = ((xi >= 0) & (xi < W) & (yi >= 0) & (yi < H))[..., None]
        return np.where(inside, E[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)], 0.0)  # zeros padding

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def rotate(envmap: np.ndarray, R_eff: np.ndarray) -> np.ndarray:
    H, W = envmap.shape[:2]
    return sample(envmap, lookup_dirs(R_eff, H, W))


# --- tone maps and the model's 256² inputs -----------------------------------------------------


def tone_map(rotated: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(LDR u8, HDR-normalised u8, log max): truncation to uint8, the normaliser per rotated map."""
    E = rotated.astype(np.float32)
    ldr = (np.clip(E, 0, 1) ** np.float32(1 / 2.2) * 255).astype(np.uint8)
    logs = np.log1p(10 * E)
    log_max = float(logs.max())
    hdrn = (logs / max(log_max, 1e-12) * 255).astype(np.uint8)
    return ldr, hdrn, log_max


def resize_u8(img: np.ndarray, size: int = 256) -> np.ndarray:
    """Pillow's bilinear resize (antialiased when shrinking), as the reference applies it."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def condition_maps(lighting: Lighting, R_c2w_blender: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The two condition images of one view, (size, size, 3) uint8: HDR-normalised, LDR."""
    ldr, hdrn, _ = tone_map(rotate(lighting.envmap, lighting.effective(R_c2w_blender)))
    return resize_u8(hdrn, size), resize_u8(ldr, size)


def background_plate(
    lighting: Lighting, R_c2w_blender: np.ndarray, width: int = 256, height: int = 256, K: np.ndarray | None = None
) -> np.ndarray:
    """What the camera sees of the environment (uint8, LDR tone map): rays through pixel centres.

    ``K`` (OpenCV pixel intrinsics) defaults to a 35 mm lens on a 32 mm sensor, as the reference."""
    if K is None:
        f = PLATE_FOCAL_MM * max(width, height) / PLATE_SENSOR_MM
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    j, i = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = (j - K[0, 2] - K[0, 1] * (i - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (i - K[1, 2]) / K[1, 1]
    rays_blender = np.stack([x, -y, -np.ones_like(x)], axis=-1)  # OpenCV camera ray in Blender axes
    rays = rays_blender @ lighting.effective(R_c2w_blender).T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    ldr, _, _ = tone_map(sample(lighting.envmap, rays, clip=False))
    return ldr
