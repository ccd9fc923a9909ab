"""Cameras for the toy world: pixel K from a field of view, OpenCV c2w looking at the scene centre."""

from __future__ import annotations

import math

import torch

from ..models.seva import cameras as seva_cameras
from .scene import SCENE_CENTRE

Tensor = torch.Tensor
WORLD_UP = (0.0, 0.0, 1.0)


def intrinsics(fov_deg: float | Tensor, width: int, height: int) -> Tensor:
    """Pixel K with a horizontal field of view, principal point at the image centre."""
    fov = torch.as_tensor(fov_deg, dtype=torch.float32)
    f = (width / 2) / torch.tan(torch.deg2rad(fov) / 2)
    K = torch.zeros(*fov.shape, 3, 3)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = f, f, width / 2, height / 2, 1.0
    return K


def look_at(position: Tensor, target: Tensor) -> Tensor:
    """OpenCV c2w (columns right, down, forward) from positions (..., 3) towards targets, Z up."""
    return seva_cameras.look_at(position, target, torch.tensor(WORLD_UP, dtype=position.dtype))


def orbit_positions(azimuth: Tensor, elevation: Tensor, radius: Tensor) -> Tensor:
    """Points on spheres around the scene centre (radians; azimuth from +x towards +y)."""
    c = torch.tensor(SCENE_CENTRE)
    d = torch.stack([torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)], -1)
    return c + d * radius[..., None]


def turntable(n: int, elevation_deg: float = 20.0, radius: float = 4.0, start_deg: float = 0.0) -> Tensor:
    """(n, 4, 4) c2w evenly spaced around the scene centre."""
    az = torch.deg2rad(torch.tensor(start_deg) + 360.0 * torch.arange(n) / n)
    pos = orbit_positions(az, torch.full((n,), math.radians(elevation_deg)), torch.full((n,), radius))
    return look_at(pos, torch.tensor(SCENE_CENTRE).expand_as(pos))


def random_rigs(b: int, t: int, g: torch.Generator) -> Tensor:
    """(b, t, 4, 4): half turntable arcs (even azimuth steps, one elevation), half scattered views."""
    arc = torch.rand(b, 1, generator=g) * 2 * math.pi + torch.linspace(0, 1, t)[None] * (
        (0.5 + 1.5 * torch.rand(b, 1, generator=g)) * math.pi * torch.sign(torch.rand(b, 1, generator=g) - 0.5)
    )
    scattered = torch.rand(b, t, generator=g) * 2 * math.pi
    is_arc = torch.rand(b, 1, generator=g) < 0.5
    az = torch.where(is_arc, arc, scattered)
    el_arc = (0.1 + 0.5 * torch.rand(b, 1, generator=g)).expand(b, t)
    el = torch.where(is_arc, el_arc, 0.05 + 0.7 * torch.rand(b, t, generator=g))
    rad = torch.where(is_arc, (3.4 + 1.2 * torch.rand(b, 1, generator=g)).expand(b, t), 3.2 + 1.6 * torch.rand(b, t, generator=g))
    pos = orbit_positions(az, el, rad)
    target = torch.tensor(SCENE_CENTRE) + 0.15 * torch.randn(b, t, 3, generator=g)
    return look_at(pos, target)
