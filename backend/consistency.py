"""Multi-view consistency from exact geometry (DESIGN §3.6).

With every view's depth and camera known, a pixel p of view i is a world point X; X projects into
view j at q. Where j sees that same point (its depth at q agrees with X's depth in j), the two
edited views should show the same colour. The score of a pair is the mean absolute colour
difference over such mutually visible pixels (0 = consistent, in the images' units, 0..1 here);
a view's score is the mean over its pairs, weighted by overlap; heat maps show per-pixel error.
Pure numpy: testable on synthetic views, and usable for coupled and independent edits alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEPTH_TOLERANCE = 0.01  # relative difference of depths that still counts as the same surface
MIN_OVERLAP = 16  # pixels; pairs seeing less of each other are not scored


@dataclass
class ViewGeometry:
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    depth: np.ndarray  # (H, W) planar depth, inf where nothing
    K: np.ndarray  # 3x3 pixel intrinsics, pixel centres at i + 0.5
    c2w: np.ndarray  # 4x4 OpenCV camera-to-world


@dataclass
class ConsistencyReport:
    pairs: dict[tuple[int, int], float] = field(default_factory=dict)  # (i, j) -> mean |diff| over overlap
    overlap: dict[tuple[int, int], int] = field(default_factory=dict)  # (i, j) -> mutually visible pixels
    per_view: list[float] = field(default_factory=list)  # overlap-weighted mean of each view's pairs (nan: no overlap)
    heatmaps: list[np.ndarray] = field(default_factory=list)  # (H, W) mean |diff| per pixel over partner views
    mean: float = float("nan")

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "per_view": self.per_view,
            "pairs": [{"i": i, "j": j, "error": e, "pixels": self.overlap[(i, j)]} for (i, j), e in sorted(self.pairs.items())],
        }


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at continuous pixel coordinates (pixel centres at i + 0.5)."""
    h, w = img.shape[:2]
    x, y = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def reproject(src: ViewGeometry, dst: ViewGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel of ``src`` seen also by ``dst``: (src pixel indices (N,), dst colour (N, 3), valid (N,)).

    valid = in front of dst, inside its frame, and dst's depth there agrees (not occluded).
    """
    h, w = src.depth.shape
    ys, xs = np.mgrid[0:h, 0:w]
    fg = np.isfinite(src.depth).ravel()
    idx = np.flatnonzero(fg)
    px = np.stack([xs.ravel()[idx] + 0.5, ys.ravel()[idx] + 0.5, np.ones(len(idx))], axis=1)
    cam = (px @ np.linalg.inv(src.K).T) * src.depth.ravel()[idx][:, None]  # planar depth: z = depth
    world = cam @ src.c2w[:3, :3].T + src.c2w[:3, 3]
    w2c = np.linalg.inv(dst.c2w)
    cam_d = world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam_d[:, 2]
    front = z > 1e-6
    uv = cam_d @ dst.K.T
    u, v = uv[:, 0] / np.where(front, uv[:, 2], 1), uv[:, 1] / np.where(front, uv[:, 2], 1)
    hd, wd = dst.depth.shape
    inside = front & (u >= 0) & (u < wd) & (v >= 0) & (v < hd)
    ui, vi = np.clip(u.astype(int), 0, wd - 1), np.clip(v.astype(int), 0, hd - 1)
    d_at = dst.depth[vi, ui]
    visible = inside & np.isfinite(d_at) & (np.abs(d_at - z) <= DEPTH_TOLERANCE * np.maximum(z, 1e-6))
    colours = np.zeros((len(idx), 3))
    if visible.any():
        colours[visible] = _bilinear(dst.image, u[visible], v[visible])
    return idx, colours, visible


def consistency(views: Sequence[ViewGeometry], pairs: Sequence[tuple[int, int]] | None = None) -> ConsistencyReport:
    """Score every ordered pair (i, j) (default: all) by reprojecting i into j."""
    n = len(views)
    pairs = pairs if pairs is not None else [(i, j) for i in range(n) for j in range(n) if i != j]
    rep = ConsistencyReport()
    sums = [np.zeros(v.depth.shape) for v in views]
    counts = [np.zeros(v.depth.shape) for v in views]
    for i, j in pairs:
        idx, colours, ok = reproject(views[i], views[j])
        if ok.sum() < MIN_OVERLAP:
            continue
        src = views[i].image.reshape(-1, 3)[idx[ok]]
        err = np.abs(src - colours[ok]).mean(axis=1)
        rep.pairs[(i, j)] = float(err.mean())
        rep.overlap[(i, j)] = int(ok.sum())
        flat_s, flat_c = sums[i].reshape(-1), counts[i].reshape(-1)
        np.add.at(flat_s, idx[ok], err)
        np.add.at(flat_c, idx[ok], 1)
    for i in range(n):
        mine = [(e, rep.overlap[p]) for p, e in rep.pairs.items() if i in p]
        tot = sum(c for _, c in mine)
        rep.per_view.append(float(sum(e * c for e, c in mine) / tot) if tot else float("nan"))
        rep.heatmaps.append(np.where(counts[i] > 0, sums[i] / np.maximum(counts[i], 1), np.nan))
    if rep.pairs:
        tot = sum(rep.overlap.values())
        rep.mean = float(sum(e * rep.overlap[p] for p, e in rep.pairs.items()) / tot)
    return rep


def heatmap_rgb(err: np.ndarray, vmax: float = 0.25) -> np.ndarray:
    """Per-pixel error -> uint8 RGB (black: not compared, blue -> yellow -> red: growing error)."""
    t = np.clip(np.nan_to_num(err, nan=0.0) / vmax, 0, 1)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 - 2 * np.abs(t - 0.5) * 2, 0, 1) * (t > 0), np.clip(1 - 2 * t, 0, 1)], -1)
    rgb[np.isnan(err)] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)
