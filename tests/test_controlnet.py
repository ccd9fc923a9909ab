"""ControlNet stylisation on tiny models: condition images from exact passes, the residual path,
and parity with diffusers' StableDiffusionControlNetImg2ImgPipeline (DDPM, several ControlNets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models.editors.control_images import canny_control, control_image, depth_control, lineart_control, normal_control
from backend.models.editors.controlnet import load_controlnet_editor
from backend.sampling import sample_coupled


def test_depth_control_is_normalised_inverse_depth_with_an_empty_background():
    depth = np.full((4, 6), np.inf)
    depth[1:3, 1:5] = [[1.0, 2.0, 4.0, 4.0], [1.0, 2.0, 4.0, 4.0]]
    c = depth_control(depth)[..., 0]
    assert c.shape == (4, 6) and (c[depth == np.inf] == 0).all()
    np.testing.assert_allclose(c[1, 1:5], [1.0, 0.1 + 0.9 / 3, 0.1, 0.1], atol=1e-6)  # 1/d min-max -> 0.1..1


def test_normal_control_follows_the_scannet_protocol_in_camera_space():
    c2w = np.eye(4)
    c2w[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # camera rotated 90 degrees about its y axis
    R = c2w[:3, :3]
    cam = {"towards viewer": [0, 0, -1], "left": [-1, 0, 0], "up": [0, -1, 0]}
    world = np.array([R @ np.array(v, dtype=float) for v in cam.values()])[None]  # (1, 3, 3)
    depth = np.ones((1, 3))
    rgb = normal_control(world, c2w, depth)[0]
    np.testing.assert_allclose(rgb, [[0.5, 0.5, 1.0], [1.0, 0.5, 0.5], [0.5, 1.0, 0.5]], atol=1e-6)
    depth[0, 1] = np.inf  # background: the neutral "facing the camera" colour
    np.testing.assert_allclose(normal_control(world, c2w, depth)[0, 1], [0.5, 0.5, 1.0])


def test_canny_marks_the_border_of_a_square_and_nothing_in_flat_areas():
    img = np.zeros((32, 32, 3))
    img[8:24, 8:24] = 255
    e = canny_control(img)[..., 0] > 0
    assert e[8:24, 6:10].any(axis=1).all() and e[8:24, 22:26].any(axis=1).all()  # left and right borders, every row
    assert not e[12:20, 12:20].any() and not e[:4].any()
    with pytest.raises(ValueError, match="low <= high"):
        canny_control(img, 200, 100)


def test_lineart_from_geometry_silhouettes_depth_jumps_and_creases():
    depth = np.full((10, 10), np.inf)
    depth[2:8, 2:8] = 5.0
    depth[4:6, 4:6] = 2.0  # a box in front of the first
    normal = np.zeros((10, 10, 3))
    normal[..., 2] = 1.0
    normal[2:8, 6:8] = [1.0, 0, 0]  # a 90 degree crease at column 6
    lines = lineart_control(depth, normal)[..., 0] > 0
    assert lines[2:8, 2].all() and not lines[2:8, 1].any()  # silhouette on the object, not the background
    assert lines[4:6, 4].all() and not lines[4:6, 3].any()  # the occluder's edge is drawn on the nearer surface
    assert lines[2:4, 5].all() or lines[2:4, 6].all()  # crease
    assert not lines[3, 3]  # flat interior


def test_control_image_names_the_missing_pass():
    with pytest.raises(ValueError, match="depth pass"):
        control_image("depth", rgb=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="unknown control"):
        control_image("pose")


def _views(n=2, size=64):
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (size, size, 3)).astype(np.float64) for _ in range(n)]
    depth = np.full((size, size), 3.0)
    depth[16:48, 16:48] = 1.5
    ctrl = [{"depth": depth_control(depth), "canny": canny_control(im)} for im in rgb]
    return rgb, ctrl


def test_two_controlnets_match_diffusers_controlnet_img2img_with_ddpm():
    from diffusers import DDPMScheduler, StableDiffusionControlNetImg2ImgPipeline

    ed = load_controlnet_editor(["depth", "canny"], base="tiny", scales=[0.8, 0.5], start=0.1, end=0.8, strength=0.6)
    ed.pipe.scheduler = DDPMScheduler.from_config(ed.pipe.scheduler.config)
    rgb, ctrl = _views()
    conds = ed.conditions(rgb, ctrl)
    prompt, negative = "an oil painting", "blurry"
    p = ed.participant("cn", conds, prompt, steps=10, cfg=5.0, seeds=[3, 4], negative=negative)
    ours = sample_coupled([p], step="ddpm").latents["cn"]

    pipe = StableDiffusionControlNetImg2ImgPipeline(**{k: v for k, v in ed.pipe.components.items()}, controlnet=ed.nets)
    ref = pipe(
        prompt=[prompt] * 2,
        negative_prompt=[negative] * 2,
        image=conds.init,  # latents: no VAE sampling, so the generators only draw the noise
        control_image=[c for c in conds.controls],
        height=64,
        width=64,
        strength=0.6,
        num_inference_steps=10,
        guidance_scale=5.0,
        controlnet_conditioning_scale=[0.8, 0.5],
        control_guidance_start=0.1,
        control_guidance_end=0.8,
        generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
        output_type="latent",
    ).images
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_residuals_reach_the_unet_only_while_the_control_is_active():
    rgb, ctrl = _views(1)
    outs = {}
    for name, kw in {"on": {}, "off": {"scales": [0.0]}, "late": {"start": 0.99}}.items():
        ed = load_controlnet_editor(["depth"], base="tiny", strength=1.0, **kw)
        outs[name] = sample_coupled([ed.participant("cn", ed.conditions(rgb, ctrl), "a", steps=4, cfg=1.0, seeds=[0])]).latents["cn"]
        ctrl2 = [{"depth": 1.0 - ctrl[0]["depth"]}]
        outs[name + "2"] = sample_coupled([ed.participant("cn", ed.conditions(rgb, ctrl2), "a", steps=4, cfg=1.0, seeds=[0])]).latents["cn"]
    assert not torch.equal(outs["on"], outs["on2"])  # the control image steers the result
    assert torch.equal(outs["off"], outs["off2"]) and torch.equal(outs["late"], outs["late2"])  # scale 0 / inactive: ignored
    assert torch.equal(outs["off"], outs["late"])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="start < end"):
        load_controlnet_editor(["depth"], base="tiny", start=0.5, end=0.5)
    with pytest.raises(ValueError, match="one conditioning scale per ControlNet"):
        load_controlnet_editor(["depth", "canny"], base="tiny", scales=[1.0])
    with pytest.raises(ValueError, match="non-empty list"):
        load_controlnet_editor(["pose"], base="tiny")
    ed = load_controlnet_editor(["depth"], base="tiny", strength=0.05)
    with pytest.raises(ValueError, match="leaves no step"):
        ed.img2img_schedule(10)
    with pytest.raises(ValueError, match="control images missing"):
        ed.conditions([np.zeros((64, 64, 3))], [{"canny": np.zeros((64, 64, 3))}])
