"""The toy world (#16): analytic checks of the torch ray caster, the light vocabulary and the batches."""

from __future__ import annotations

import math

import pytest
import torch

from backend.toyworld import cameras, data, prompts
from backend.toyworld.render import render, srgb
from backend.toyworld.scene import BOX, NONE, SPHERE, TORUS, Lights, Scenes, random_scenes

SIZE = 64


def one_primitive(kind: int, size, centre=(0.0, 0.0, 0.5), albedo=(0.5, 0.5, 0.5), ground: bool = False) -> Scenes:
    k = torch.full((1, 4), NONE)
    k[0, 0] = kind
    return Scenes(
        kind=k,
        centre=torch.tensor([[centre, (0, 0, 0), (0, 0, 0), (0, 0, 0)]], dtype=torch.float32),
        rot=torch.eye(3).expand(1, 4, 3, 3).clone(),
        size=torch.tensor([[size, (0, 0, 0), (0, 0, 0), (0, 0, 0)]], dtype=torch.float32),
        albedo=torch.tensor([[albedo] * 4], dtype=torch.float32),
        ground=torch.tensor([ground]),
        ground_albedo=torch.tensor([[0.4, 0.4, 0.4]]),
    )


def overhead_light(colour=1.0, ambient=0.0) -> Lights:
    return Lights(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3), colour), torch.full((1, 3), ambient))


def look_from(position, target=(0.0, 0.0, 0.5)) -> torch.Tensor:
    return cameras.look_at(torch.tensor([position], dtype=torch.float32), torch.tensor([target], dtype=torch.float32))


def test_sphere_silhouette_depth_and_shading():
    r, dist = 0.5, 4.0
    scene = one_primitive(SPHERE, (r, r, r))
    c2w = look_from((dist, 0.0, 0.5))
    K = cameras.intrinsics(30.0, SIZE, SIZE)[None]
    out = render(scene, overhead_light(), K, c2w, SIZE, SIZE, ss=4)
    f = float(K[0, 0, 0])
    # perspective silhouette of a sphere: a disc of radius f * r / sqrt(d^2 - r^2) pixels
    expected = math.pi * (f * r / math.sqrt(dist**2 - r**2)) ** 2
    assert float(out.alpha.sum()) == pytest.approx(expected, rel=0.02)
    # planar depth at the centre pixels: the sphere's near point
    c = SIZE // 2
    assert float(out.depth[0, c - 1 : c + 1, c - 1 : c + 1].mean()) == pytest.approx(dist - r, abs=0.01)
    # light from straight above: the top of the sphere is lit (albedo * colour * cos), its bottom dark
    top, bottom = out.rgb[0, :, c - 12, c], out.rgb[0, :, c + 12, c]
    assert float(top.mean()) > 0.3 and float(bottom.mean()) == pytest.approx(0.0, abs=1e-6)


def test_box_face_radiance_is_albedo_times_light_plus_ambient():
    scene = one_primitive(BOX, (0.3, 0.3, 0.3), albedo=(0.2, 0.4, 0.6))
    c2w = look_from((0.0, 0.001, 4.0))  # looking straight down at the top face
    out = render(scene, overhead_light(colour=1.5, ambient=0.1), cameras.intrinsics(30.0, SIZE, SIZE)[None], c2w, SIZE, SIZE)
    c = SIZE // 2
    assert torch.allclose(out.rgb[0, :, c, c], torch.tensor([0.2, 0.4, 0.6]) * (1.5 + 0.1), atol=1e-4)


def test_hard_shadow_on_the_ground():
    scene = one_primitive(SPHERE, (0.3, 0.3, 0.3), centre=(0.0, 0.0, 0.8), ground=True)
    light = overhead_light(colour=1.0, ambient=0.05)
    c2w = look_from((0.0, -2.5, 2.5), target=(0.0, 0.0, 0.0))
    K = cameras.intrinsics(50.0, SIZE, SIZE)[None]
    out = render(scene, light, K, c2w, SIZE, SIZE, ss=1)
    # project the ground point under the sphere and one far from it
    w2c = torch.linalg.inv(c2w[0])

    def pixel(p):
        q = (w2c[:3, :3] @ torch.tensor(p) + w2c[:3, 3]) @ K[0].T
        return int(q[1] / q[2]), int(q[0] / q[2])

    under, away = pixel((0.0, 0.15, 0.0)), pixel((1.2, 0.0, 0.0))
    assert float(out.rgb[0, 0, under[0], under[1]]) == pytest.approx(0.4 * 0.05, abs=1e-4)  # ambient only
    assert float(out.rgb[0, 0, away[0], away[1]]) == pytest.approx(0.4 * 1.05, abs=1e-3)  # lit ground


def test_torus_hole_is_empty():
    scene = one_primitive(TORUS, (0.4, 0.1, 0.0), centre=(0.0, 0.0, 0.5))
    c2w = look_from((0.0, 0.001, 4.0))  # down the torus' axis
    out = render(scene, overhead_light(), cameras.intrinsics(30.0, SIZE, SIZE)[None], c2w, SIZE, SIZE)
    c = SIZE // 2
    assert float(out.alpha[0, 0, c, c]) == 0.0  # the hole
    f = float(cameras.intrinsics(30.0, SIZE, SIZE)[0, 0])
    ring = c + int(round(f * 0.4 / 3.5))  # the tube's centre line, 3.5 m below the camera
    assert float(out.alpha[0, 0, c, ring]) == 1.0


def test_prompt_vocabulary_and_meaning():
    assert len(prompts.all_prompts()) == 30
    assert prompts.parse("Warm light from the LEFT") == ("warm", "left")
    with pytest.raises(ValueError, match="<colour> light from the <direction>"):
        prompts.parse("beach sunset lighting")
    c2w = cameras.turntable(4, elevation_deg=20.0)
    right = c2w[:, :3, 0]
    left = prompts.light_for("white light from the left", c2w)
    assert (torch.einsum("ni,ni->n", left.direction, right) < -0.8).all()  # towards each camera's left
    front = prompts.light_for("white light from the front", c2w)
    assert (torch.einsum("ni,ni->n", front.direction, c2w[:, :3, 2]) < -0.7).all()  # behind the camera
    top = prompts.light_for("red light from the top", c2w[:1])
    assert float(top.direction[0, 2]) == pytest.approx(math.sin(math.radians(80)), abs=1e-5)
    assert torch.allclose(top.colour[0], torch.tensor(prompts.COLOURS["red"]) * prompts.INTENSITY)
    with pytest.raises(ValueError, match="2 prompts for 4 cameras"):
        prompts.light_for(["warm light from the left"] * 2, c2w)


def test_random_scenes_rest_on_the_ground_and_batches_are_in_range():
    s = random_scenes(64, seed=3)
    assert ((s.kind != NONE).sum(1) >= 1).all()
    assert (s.centre[..., 2][s.kind != NONE] > 0).all()
    g = torch.Generator().manual_seed(0)
    pairs = data.relight_pairs(3, g, size=32)
    assert pairs.source.shape == (3, 3, 32, 32) and len(pairs.prompts) == 3
    assert 0 <= float(pairs.source.min()) and float(pairs.target.max()) <= 1
    assert not torch.allclose(pairs.source, pairs.target)
    w = data.windows(2, 4, g, size=32)
    assert w.images.shape == (2, 4, 3, 32, 32) and w.c2w.shape == (2, 4, 4, 4)
    assert float(srgb(torch.tensor(0.5))) == pytest.approx(0.7354, abs=1e-4)
