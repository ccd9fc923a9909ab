"""Coarse edits with known geometry: an analytic ray caster renders boxes before and after a move;
the forward warp must put every interior pixel where the moved box projects (< 0.5 px), open holes
exactly where the background is disoccluded, respect occlusion, delete and duplicate."""

from __future__ import annotations

import numpy as np
import pytest

from backend.coarse_edit import ObjectEdit, coarse_edit

H = W = 64
K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
C2W = np.eye(4)  # camera at the origin looking along +z


def translation(dx=0.0, dy=0.0, dz=0.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (dx, dy, dz)
    return m


def render(boxes: list[tuple[int, np.ndarray, np.ndarray]]):
    """Ray-cast axis-aligned boxes (index, min corner, max corner) in front of a plane at z = 10 (index 9).
    Colour = the hit point's coordinates relative to its box's min corner (the plane: world x, y, 0)."""
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1], np.ones_like(j)], -1)  # z = 1: t = planar depth
    depth = np.full((H, W), 10.0)
    index = np.full((H, W), 9)
    color = np.stack([d[..., 0] * 10, d[..., 1] * 10, np.zeros_like(j)], -1)
    for idx, lo, hi in boxes:
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = lo / d, hi / d
        tmin = np.nanmax(np.minimum(t0, t1), -1)
        tmax = np.nanmin(np.maximum(t0, t1), -1)
        hit = (tmax >= tmin) & (tmin > 0) & (tmin < depth)
        depth[hit], index[hit] = tmin[hit], idx
        color[hit] = (d[hit] * tmin[hit, None]) - lo
    return color, depth, index


CUBE = (1, np.array([-1.0, -1.0, 4.0]), np.array([1.0, 1.0, 6.0]))


def moved(box, delta):
    idx, lo, hi = box
    return idx, lo + delta[:3, 3], hi + delta[:3, 3]


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours share their value (the frame's border rows and columns never are)."""
    m = mask.copy()
    m[[0, -1], :] = False
    m[:, [0, -1]] = False
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            m &= np.roll(np.roll(mask, dy, 0), dx, 1)
    return m


def boundary_band(*masks: np.ndarray) -> np.ndarray:
    band = np.zeros((H, W), dtype=bool)
    for m in masks:
        band |= m & ~interior(m) | ~m & ~interior(~m)
    return band


def test_translated_cube_lands_where_it_projects_and_holes_are_the_disoccluded_background():
    delta = translation(0.93, 0.47)  # 18.6 px right, 9.4 px down at the front face (z = 4)
    color, depth, index = render([CUBE])
    after_color, _, after_index = render([moved(CUBE, delta)])
    ce = coarse_edit(color, depth, index, K, C2W, [ObjectEdit(1, delta)])
    inner = interior(after_index == 1)
    # colours encode the surface point in box coordinates: the warped pixel shows the point the moved cube shows there
    err_px = np.abs(ce.rgba[..., :2] - after_color[..., :2])[inner] * K[0, 0] / 4.0  # box units -> pixels at z = 4
    assert inner.sum() > 500 and err_px.max() < 0.5, err_px.max()
    assert (ce.object_index[inner] == 1).all() and np.allclose(ce.depth[inner], 4.0)
    disoccluded = (index == 1) & (after_index != 1)
    band = boundary_band(index == 1, after_index == 1)
    assert disoccluded.sum() > 100
    np.testing.assert_array_equal(ce.holes[~band], disoccluded[~band])
    assert (ce.rgba[ce.holes, 3] == 0).all() and (ce.rgba[~ce.holes, 3] == 255).all()
    static = (index == 9) & (after_index == 9)
    np.testing.assert_array_equal(ce.rgba[static, :3], color[static])  # the rest of the view is untouched


def test_occlusion_order_a_static_box_in_front_stays_in_front():
    occluder = (2, np.array([0.4, -0.3, 2.5]), np.array([1.2, 0.5, 3.0]))
    delta = translation(0.93, 0.0)
    color, depth, index = render([CUBE, occluder])
    _, _, after_index = render([moved(CUBE, delta), occluder])
    ce = coarse_edit(color, depth, index, K, C2W, [ObjectEdit(1, delta)])
    band = boundary_band(index == 2, after_index == 2, index == 1, after_index == 1)
    assert ((after_index == 2) & ~band).sum() > 50
    np.testing.assert_array_equal(ce.object_index[~band & ~ce.holes], after_index[~band & ~ce.holes])
    # and a cube moved behind the plane's depth is hidden by nothing in front, but behind the occluder
    assert (ce.object_index[(index == 2) & ~band] == 2).all()


def test_delete_and_duplicate():
    color, depth, index = render([CUBE])
    gone = coarse_edit(color, depth, index, K, C2W, [ObjectEdit(1, np.eye(4), "delete")])
    np.testing.assert_array_equal(gone.holes, index == 1)
    delta = translation(-1.37, 0.2)
    both = coarse_edit(color, depth, index, K, C2W, [ObjectEdit(1, delta, "duplicate")])
    _, _, after_index = render([CUBE, moved(CUBE, delta)])
    band = boundary_band(index == 1, after_index == 1)
    assert not both.holes.any()
    np.testing.assert_array_equal(both.object_index[~band] == 1, (after_index == 1)[~band])
    np.testing.assert_array_equal(both.rgba[index == 1, :3], color[index == 1])  # the original stays as it was


def test_a_cube_coming_closer_has_no_cracks():
    delta = translation(0.0, 0.0, -1.0)  # front face from z = 4 to 3: a third larger on screen
    color, depth, index = render([CUBE])
    _, _, after_index = render([moved(CUBE, delta)])
    ce = coarse_edit(color, depth, index, K, C2W, [ObjectEdit(1, delta)])
    inner = interior(after_index == 1)
    assert (ce.object_index[inner] == 1).all() and not ce.holes[inner].any()


def test_bad_edits_are_named():
    with pytest.raises(ValueError, match="background"):
        ObjectEdit(0, np.eye(4))
    with pytest.raises(ValueError, match="action must be one of"):
        ObjectEdit(1, np.eye(4), "rotate")
