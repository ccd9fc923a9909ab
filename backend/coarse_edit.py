"""Coarse spatial edits from exact geometry (Magic Fixup's input), one view at a time.

Given a view's colour, planar depth (along the view axis, +inf where nothing is hit), object
index (0 = background) and camera, and the user's object edits (world transform deltas), the
coarse edit is what the camera would see if the moved pixels simply travelled with their
objects: every pixel of a moved object is back-projected with its exact depth, transformed by
the object's delta, projected again and splatted with a z-buffer against the unchanged rest of
the view; the pixels an object left (or a deleted object had) that nothing covers become holes
(alpha 0) for the model to fill. Works the same for rendered views and for photo views whose
depth comes from proxy geometry. Pure numpy; cameras are OpenCV (x right, y down, z forward),
pixel centres at i + 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTIONS = ("move", "duplicate", "delete")


@dataclass(frozen=True)
class ObjectEdit:
    index: int  # the object's pass index in the view's object-index map
    delta: np.ndarray  # 4x4 world transform: after @ inverse(before) (identity for delete)
    action: str = "move"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"object edit action must be one of {ACTIONS}, got {self.action!r}")
        if self.index <= 0:
            raise ValueError("object index 0 is the background; edits apply to objects with a pass index >= 1")


@dataclass
class CoarseEdit:
    rgba: np.ndarray  # (H, W, 4) float: colour and alpha (255 valid, 0 hole), the colour range of the input
    depth: np.ndarray  # (H, W) planar depth after the edit (+inf on holes and background)
    object_index: np.ndarray  # (H, W) int after the edit (0 on holes)
    holes: np.ndarray  # (H, W) bool


def backproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of every pixel centre at its planar depth (inf where nothing is hit)."""
    H, W = depth.shape
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.stack([j, i, np.ones_like(j)], -1) @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T  # z = 1
    cam = rays * depth[..., None]
    c2w = np.asarray(c2w, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf * 0 where nothing is hit: those points are never used
        return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel coordinates (N, 2) in continuous units, planar depth (N,)) of world points."""
    c2w = np.asarray(c2w, dtype=np.float64)
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = cam[:, 2]
    uv = (cam @ np.asarray(K, dtype=np.float64).T)[:, :2] / np.where(z > 0, z, np.nan)[:, None]
    return uv, z


def coarse_edit(
    rgb: np.ndarray, depth: np.ndarray, object_index: np.ndarray, K: np.ndarray, c2w: np.ndarray, edits: Sequence[ObjectEdit]
) -> CoarseEdit:
    H, W = depth.shape
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.inf)
    color = np.asarray(rgb, dtype=np.float64)[..., :3].copy()
    index = np.asarray(object_index).astype(np.int64).copy()
    alpha = np.full((H, W), 255.0)
    zbuf = depth.copy()
    # the pixels that leave: moved and deleted objects (duplicates keep their original)
    leaving = np.isin(index, [e.index for e in edits if e.action in ("move", "delete")])
    color[leaving], alpha[leaving], zbuf[leaving], index[leaving] = 0.0, 0.0, np.inf, 0
    world = backproject(depth, K, c2w)
    src_color = np.asarray(rgb, dtype=np.float64)[..., :3]
    for e in edits:
        if e.action == "delete":
            continue
        src = (np.asarray(object_index) == e.index) & np.isfinite(depth)
        if not src.any():
            continue
        pts = world[src]
        delta = np.asarray(e.delta, dtype=np.float64)
        moved = pts @ delta[:3, :3].T + delta[:3, 3]
        uv, z = project(moved, K, c2w)
        ok = (z > 0) & np.isfinite(uv).all(1)
        cols, rows = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)  # the pixel whose centre is nearest
        ok &= (cols >= 0) & (cols < W) & (rows >= 0) & (rows < H)
        flat, z, c = rows[ok] * W + cols[ok], z[ok], src_color[src][ok]
        nearest = np.full(H * W, np.inf)
        np.minimum.at(nearest, flat, z)  # the z-buffer among this object's own splats
        win = z <= nearest[flat]
        flat, z, c = flat[win], z[win], c[win]
        front = z < zbuf.ravel()[flat]  # ... and against everything already in the view
        flat, z, c = flat[front], z[front], c[front]
        hit = np.zeros(H * W, dtype=bool)
        hit[flat] = True
        cz = np.full(H * W, np.inf)
        cz[flat] = z
        cc = np.zeros((H * W, 3))
        cc[flat] = c
        hit, cz, cc = _close_cracks(hit.reshape(H, W), cz.reshape(H, W), cc.reshape(H, W, 3), zbuf)
        color[hit], alpha[hit], zbuf[hit], index[hit] = cc[hit], 255.0, cz[hit], e.index
    holes = alpha == 0
    return CoarseEdit(np.dstack([color, alpha]), np.where(holes, np.inf, zbuf), np.where(holes, 0, index), holes)


def _close_cracks(hit: np.ndarray, z: np.ndarray, c: np.ndarray, zbuf: np.ndarray, rounds: int = 4):
    """Pixels a moved object should cover but no source pixel landed on (it came closer or turned):
    a miss with at least 5 of 8 neighbours hit takes their mean colour and depth, if that is in front.
    5 closes crossing row and column gaps of up to 2x magnification; straight silhouette edges (3
    neighbours) and convex corners never grow, concave corners may gain a pixel."""
    H, W = hit.shape
    for _ in range(rounds):
        pad_h = np.pad(hit, 1)
        pad_z = np.pad(np.where(hit, z, 0.0), 1)
        pad_c = np.pad(np.where(hit[..., None], c, 0.0), ((1, 1), (1, 1), (0, 0)))
        count = np.zeros((H, W))
        zsum, csum = np.zeros((H, W)), np.zeros((H, W, 3))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == dx == 0:
                    continue
                sl = (slice(1 + dy, 1 + dy + H), slice(1 + dx, 1 + dx + W))
                count += pad_h[sl]
                zsum += pad_z[sl]
                csum += pad_c[sl]
        fill = ~hit & (count >= 5)
        zf = np.where(fill, zsum / np.maximum(count, 1), np.inf)
        fill &= zf < zbuf
        if not fill.any():
            break
        z = np.where(fill, zf, z)
        c = np.where(fill[..., None], csum / np.maximum(count, 1)[..., None], c)
        hit = hit | fill
    return hit, z, c
