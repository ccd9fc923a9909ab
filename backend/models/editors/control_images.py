"""ControlNet condition images from a view's exact geometry and colour (research/editors.md §2).

Every function returns (H, W, 3) float32 in [0, 1], the range ControlNet takes (the pipeline's
control processor does not normalise to [-1, 1]). Rendered views carry exact depth, normals
and object indices, so no annotator network (MiDaS, BAE, lineart) is needed:

- depth: inverse depth min-max normalised over the visible pixels, near = white, background
  black: the MiDaS convention the depth ControlNet was trained on.
- normal: camera-space normals in the ScanNet protocol used by ``control_v11p_sd15_normalbae``
  (red = left, green = up, blue = towards the viewer, each mapped (n + 1) / 2); background gets
  the "facing the camera" colour (0.5, 0.5, 1).
- canny: Canny edges of the colour image (white on black), thresholds on the 0..255 scale.
- lineart: exact lines from the geometry (white on black): object silhouettes and boundaries,
  depth discontinuities and creases where normals turn by more than ``crease_deg``.
- tile: the colour image itself (the tile ControlNet keeps colour layout and detail).
"""

from __future__ import annotations

import numpy as np

KINDS = ("depth", "normal", "canny", "lineart", "tile")
# What each kind reads from a view: c = colour, d = depth, n = normal, o = object index
NEEDS = {"depth": "d", "normal": "n", "canny": "c", "lineart": "d", "tile": "c"}


def _grey3(x: np.ndarray) -> np.ndarray:
    return np.repeat(x.astype(np.float32)[..., None], 3, axis=2)


def visible(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def depth_control(depth: np.ndarray) -> np.ndarray:
    hit = visible(depth)
    out = np.zeros(depth.shape, dtype=np.float64)
    if hit.any():
        disp = 1.0 / depth[hit]
        lo, hi = disp.min(), disp.max()
        out[hit] = (disp - lo) / (hi - lo) if hi > lo else 1.0
        out[hit] = 0.1 + 0.9 * out[hit]  # the farthest visible surface stays distinct from the empty background
    return _grey3(out)


def normal_control(normal_world: np.ndarray, c2w: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """World normals -> OpenCV camera (x right, y down, z forward) -> (left, up, towards viewer)."""
    R = np.asarray(c2w, dtype=np.float64)[:3, :3]
    n_cam = normal_world.astype(np.float64) @ R  # R^T n per pixel
    norm = np.linalg.norm(n_cam, axis=-1, keepdims=True)
    valid = norm[..., 0] > 1e-6
    if depth is not None:
        valid &= visible(depth)
    n_cam = np.where(valid[..., None], n_cam / np.maximum(norm, 1e-12), 0.0)
    rgb = (1.0 - n_cam) / 2.0  # left = -x, up = -y, towards the viewer = -z
    rgb[~valid] = (0.5, 0.5, 1.0)
    return rgb.astype(np.float32)


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    kh, kw = kernel.shape
    pad = np.pad(img, ((kh // 2, kh // 2), (kw // 2, kw // 2)), mode="edge")
    out = np.zeros_like(img, dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += kernel[dy, dx] * pad[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def canny_control(rgb: np.ndarray, low: float = 100.0, high: float = 200.0, blur_sigma: float = 1.4) -> np.ndarray:
    """Canny edges of an (H, W, 3) 0..255 image: blur, Sobel, non-maximum suppression, hysteresis."""
    if not 0 <= low <= high:
        raise ValueError(f"canny thresholds need 0 <= low <= high, got {low}, {high}")
    grey = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    r = np.arange(-2, 3)
    g = np.exp(-(r**2) / (2 * blur_sigma**2))
    g /= g.sum()
    grey = _convolve(grey, np.outer(g, g))
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    gx, gy = _convolve(grey, sx), _convolve(grey, sx.T)
    mag = np.abs(gx) + np.abs(gy)
    # non-maximum suppression along the gradient direction quantised to 0/45/90/135 degrees
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = ((angle + 22.5) // 45).astype(int) % 4
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    p = np.pad(mag, 1)
    H, W = mag.shape
    keep = np.zeros_like(mag, dtype=bool)
    for s, (dy, dx) in offsets.items():
        a = p[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
        b = p[1 - dy : 1 - dy + H, 1 - dx : 1 - dx + W]
        keep |= (sector == s) & (mag >= a) & (mag > b)
    strong = keep & (mag > high)
    weak = keep & (mag > low)
    edges = strong.copy()
    while True:  # hysteresis: weak pixels 8-connected to an edge become edges
        grown = np.pad(edges, 1)
        neigh = np.zeros_like(edges)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neigh |= grown[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
        new = weak & neigh & ~edges
        if not new.any():
            break
        edges |= new
    return _grey3(edges)


def lineart_control(
    depth: np.ndarray,
    normal_world: np.ndarray | None = None,
    object_index: np.ndarray | None = None,
    depth_jump: float = 0.05,
    crease_deg: float = 40.0,
) -> np.ndarray:
    """Lines where neighbouring pixels belong to different objects, jump in depth or turn sharply."""
    hit = visible(depth)
    lines = np.zeros(depth.shape, dtype=bool)
    d = np.where(hit, depth, np.inf)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        edge = hit[a] != hit[b]
        both = hit[a] & hit[b]
        with np.errstate(invalid="ignore"):  # inf - inf off the object; masked by `both`
            rel = np.abs(d[a] - d[b]) / np.minimum(d[a], d[b]).clip(1e-9)
        edge |= both & (rel > depth_jump)
        if object_index is not None:
            edge |= object_index[a] != object_index[b]
        if normal_world is not None:
            cos = np.sum(normal_world[a] * normal_world[b], axis=-1)
            edge |= both & (cos < np.cos(np.deg2rad(crease_deg)))
        # mark the nearer pixel of a pair, so lines sit on the visible surface
        nearer_a = d[a] <= d[b]
        lines[a] |= edge & nearer_a
        lines[b] |= edge & ~nearer_a
    return _grey3(lines)


def tile_control(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., :3].astype(np.float32) / 255.0).clip(0, 1)


def control_image(
    kind: str,
    rgb: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    normal_world: np.ndarray | None = None,
    c2w: np.ndarray | None = None,
    object_index: np.ndarray | None = None,
) -> np.ndarray:
    """One control image for one view; says which pass is missing when it cannot be computed."""
    if kind not in KINDS:
        raise ValueError(f"unknown control {kind!r}; choose from {', '.join(KINDS)}")
    need = {"c": ("colour image", rgb), "d": ("depth pass", depth), "n": ("normal pass", normal_world)}[NEEDS[kind]]
    if need[1] is None:
        raise ValueError(f"the {kind} control needs the view's {need[0]}; export the rig with that pass")
    if kind == "depth":
        return depth_control(depth)
    if kind == "normal":
        return normal_control(normal_world, c2w if c2w is not None else np.eye(4), depth)
    if kind == "canny":
        return canny_control(rgb)
    if kind == "lineart":
        return lineart_control(depth, normal_world, object_index)
    return tile_control(rgb)
