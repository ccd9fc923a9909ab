"""The toy world's torch ray caster against Blender's Cycles on the same scene (#16).

One scene with a box, a torus, a cylinder and a sphere on the ground disc, under a coloured sun
with hard shadows, seen by two cameras; Cycles renders it with the add-on-independent builder in
``backend/toyworld/blender.py`` (direct light only) and the torch renderer renders it analytically.
They must agree: coverage, and colour of every pixel up to mesh faceting and anti-aliasing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

bpy = pytest.importorskip("bpy")

SIZE = 96


def _cycles_views(scene_batch, light, c2ws, tmp_path):
    from backend.toyworld import blender as tb
    from backend.toyworld.data import FOV

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    objects = tb.build(scene_batch, 0, light)
    tb.cycles_direct_light(scene, SIZE, samples=32)
    out = []
    for i, c2w in enumerate(c2ws):
        scene.camera = tb.camera_from_opencv(f"cam{i}", c2w.numpy(), FOV)
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.render.filepath = str(tmp_path / f"cycles_{i}.png")
        bpy.ops.render.render(write_still=True)
        from PIL import Image

        out.append(np.asarray(Image.open(tmp_path / f"cycles_{i}.png").convert("RGBA"), dtype=np.float64) / 255.0)
    return objects, out


def test_torch_render_matches_cycles(tmp_path):
    from backend.toyworld import cameras, prompts
    from backend.toyworld.data import FOV, straight
    from backend.toyworld.render import render
    from backend.toyworld.scene import BOX, CYLINDER, SPHERE, TORUS, random_scenes

    scenes = random_scenes(1, seed=7)
    assert set(scenes.kind[0].tolist()) == {SPHERE, BOX, CYLINDER, TORUS} and bool(scenes.ground[0])
    c2ws = cameras.turntable(2, elevation_deg=25.0, radius=3.6, start_deg=30.0)
    light = prompts.light_for("warm light from the left", c2ws[:1])
    objects, cycles = _cycles_views(scenes, light, c2ws, tmp_path)
    assert sorted(o.name.split(".")[0] for o in objects) == ["Box", "Cylinder", "Sphere", "Torus"]

    K = cameras.intrinsics(FOV, SIZE, SIZE).expand(2, 3, 3)
    rows = torch.zeros(2, dtype=torch.long)
    r = render(scenes.index(rows), light.index(rows), K, c2ws, SIZE, SIZE, ss=4)
    ours_alpha = r.alpha[:, 0].numpy()
    ours_rgb = straight(r.rgb, r.alpha).permute(0, 2, 3, 1).numpy() * ours_alpha[..., None]
    for i, cyc in enumerate(cycles):
        cyc_rgb = cyc[..., :3] * cyc[..., 3:]
        alpha_err = np.abs(cyc[..., 3] - ours_alpha[i])
        rgb_err = np.abs(cyc_rgb - ours_rgb[i]).mean(-1)
        interior = (cyc[..., 3] > 0.999) & (ours_alpha[i] > 0.999)
        # coverage agrees except along silhouettes (faceted meshes, sub-pixel sampling)
        assert alpha_err.mean() < 0.01, f"view {i}: mean alpha error {alpha_err.mean():.4f}"
        assert (alpha_err > 0.5).mean() < 0.01
        # shading (Lambert + shadows + ambient) agrees inside both silhouettes
        assert interior.mean() > 0.2
        assert np.median(rgb_err[interior]) < 0.01, f"view {i}: median colour error {np.median(rgb_err[interior]):.4f}"
        assert rgb_err[interior].mean() < 0.03, f"view {i}: mean colour error {rgb_err[interior].mean():.4f}"
        # the sun casts the same shadows: dark ground pixels in both
        assert np.corrcoef(cyc_rgb[interior].ravel(), ours_rgb[i][interior].ravel())[0, 1] > 0.98
