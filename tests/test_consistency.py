"""The consistency report on synthetic views with exact geometry: a textured ground plane seen from
above by several cameras, optionally with an occluder in one view."""

from __future__ import annotations

import math

import numpy as np

from backend.consistency import ViewGeometry, consistency, heatmap_rgb

H, W = 48, 64
K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])


def look_down(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """OpenCV camera at (x, y, z) looking straight down at the plane Z = 0."""
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, -1.0, -1.0])  # z forward = -Z world
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, (x, y, z)
    return m


def texture(X, Y):
    return np.stack([0.5 + 0.4 * np.sin(1.3 * X), 0.5 + 0.4 * np.cos(0.9 * Y), 0.5 + 0.3 * np.sin(0.7 * (X + Y))], -1)


def render(c2w: np.ndarray) -> ViewGeometry:
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ c2w[:3, :3].T
    o = c2w[:3, 3]
    t = -o[2] / rays[..., 2]  # ray-plane Z = 0
    X, Y = o[0] + t * rays[..., 0], o[1] + t * rays[..., 1]
    depth = t  # planar depth: rays have camera z = 1
    return ViewGeometry(texture(X, Y), depth, K, c2w)


CAMS = [look_down(0, 0, 5, 0), look_down(0.8, 0.2, 5.5, 0.3), look_down(-0.6, 0.5, 4.5, -0.4), look_down(0.3, -0.7, 5.0, 1.0)]


def test_identical_content_scores_near_zero():
    rep = consistency([render(c) for c in CAMS])
    assert len(rep.pairs) == 12 and all(v > 1000 for v in rep.overlap.values())
    assert rep.mean < 0.01 and max(rep.per_view) < 0.01


def test_a_shifted_or_recoloured_view_scores_high_and_is_located():
    views = [render(c) for c in CAMS]
    recoloured = ViewGeometry(views[2].image[..., ::-1].copy(), views[2].depth, K, CAMS[2])
    rep = consistency(views[:2] + [recoloured] + views[3:])
    assert rep.per_view[2] > 0.1 and rep.per_view[2] == max(rep.per_view)
    assert rep.pairs[(0, 1)] < 0.01  # pairs without the bad view stay clean
    shifted = ViewGeometry(np.roll(views[1].image, 6, axis=1), views[1].depth, K, CAMS[1])
    rep2 = consistency([views[0], shifted])
    assert rep2.mean > 0.05
    heat = heatmap_rgb(rep.heatmaps[2])
    assert heat.shape == (H, W, 3) and heat.dtype == np.uint8


def test_occluded_pixels_are_excluded():
    views = [render(c) for c in CAMS[:2]]
    occluded = views[1]
    img, depth = occluded.image.copy(), occluded.depth.copy()
    img[10:30, 20:40] = [1.0, 0.0, 1.0]  # an object in front of the plane in view 1 only ...
    depth[10:30, 20:40] = 2.0  # ... much nearer than the plane
    rep = consistency([views[0], ViewGeometry(img, depth, K, CAMS[1])])
    assert rep.mean < 0.01  # the occluder's pixels never meet the plane's points: excluded
    clean = consistency(views)
    assert rep.overlap[(0, 1)] < clean.overlap[(0, 1)] - 300  # and they were really dropped


def test_background_and_non_overlapping_views_are_not_scored():
    far = look_down(40, 40, 5, 0)  # sees a different part of the plane
    v = [render(CAMS[0]), render(far)]
    v[0].depth[:, :10] = np.inf  # background pixels: nothing to compare
    rep = consistency(v)
    assert rep.pairs == {} and all(math.isnan(x) for x in rep.per_view) and math.isnan(rep.mean)
