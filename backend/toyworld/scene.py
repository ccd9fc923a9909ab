"""Toy scenes: up to ``MAX_PRIMS`` primitives on an optional ground disc, lit by a sun and an ambient term.

World axes are Blender's (Z up), units metres. Every primitive rests on or floats above z = 0;
the ground disc (radius ``GROUND_RADIUS``) lies at z = 0. A scene batch is a set of tensors with a
leading scene axis, so thousands of views render in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

Tensor = torch.Tensor

NONE, SPHERE, BOX, CYLINDER, TORUS = 0, 1, 2, 3, 4
KIND_NAMES = {SPHERE: "sphere", BOX: "box", CYLINDER: "cylinder", TORUS: "torus"}
MAX_PRIMS = 4
GROUND_RADIUS = 3.0
SCENE_CENTRE = (0.0, 0.0, 0.35)  # where cameras look


@dataclass
class Scenes:
    """B scenes of P primitive slots. Sizes: sphere (r, -, -), box half extents, cylinder (r, half height, -),
    torus (major R, minor r, -); ``rot`` maps local to world (the cylinder's and torus' axis is local z)."""

    kind: Tensor  # (B, P) long
    centre: Tensor  # (B, P, 3)
    rot: Tensor  # (B, P, 3, 3)
    size: Tensor  # (B, P, 3)
    albedo: Tensor  # (B, P, 3) linear
    ground: Tensor  # (B,) bool
    ground_albedo: Tensor  # (B, 3) linear

    def __len__(self) -> int:
        return self.kind.shape[0]

    def to(self, device) -> Scenes:
        return Scenes(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx) -> Scenes:
        return Scenes(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def describe(self, b: int = 0) -> list[dict]:
        """Scene ``b`` as plain lists (for logs, cards and the Blender export)."""
        out = []
        for p in range(self.kind.shape[1]):
            k = int(self.kind[b, p])
            if k != NONE:
                out.append(
                    {
                        "kind": KIND_NAMES[k],
                        "centre": self.centre[b, p].tolist(),
                        "rot": self.rot[b, p].tolist(),
                        "size": self.size[b, p].tolist(),
                        "albedo": self.albedo[b, p].tolist(),
                    }
                )
        return out


@dataclass
class Lights:
    """Per scene (or per view): a sun (unit direction *towards* the light, linear colour) and ambient."""

    direction: Tensor  # (B, 3)
    colour: Tensor  # (B, 3)
    ambient: Tensor  # (B, 3)

    def to(self, device) -> Lights:
        return Lights(self.direction.to(device), self.colour.to(device), self.ambient.to(device))

    def index(self, idx) -> Lights:
        return Lights(self.direction[idx], self.colour[idx], self.ambient[idx])


def _rotation_z_then_tilt(yaw: Tensor, tilt: Tensor, tilt_axis: Tensor) -> Tensor:
    """Rotation about z by ``yaw`` followed by a tilt about a horizontal axis (Rodrigues)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    z, o = torch.zeros_like(yaw), torch.ones_like(yaw)
    rz = torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(*yaw.shape, 3, 3)
    k = torch.stack([torch.cos(tilt_axis), torch.sin(tilt_axis), torch.zeros_like(tilt_axis)], -1)
    kx = torch.zeros(*yaw.shape, 3, 3, dtype=yaw.dtype)
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 0] = -k[..., 2], k[..., 1], k[..., 2]
    kx[..., 1, 2], kx[..., 2, 0], kx[..., 2, 1] = -k[..., 0], -k[..., 1], k[..., 0]
    eye = torch.eye(3, dtype=yaw.dtype).expand_as(kx)
    rt = eye + torch.sin(tilt)[..., None, None] * kx + (1 - torch.cos(tilt))[..., None, None] * (kx @ kx)
    return rt @ rz


def random_albedo(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Saturated-ish colours from HSV (hue uniform, saturation 0.3-0.9, value 0.35-0.9), linear."""
    h = torch.rand(shape, generator=g) * 6
    s = 0.3 + 0.6 * torch.rand(shape, generator=g)
    v = 0.35 + 0.55 * torch.rand(shape, generator=g)
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], -1)
    rgb = v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb**2.2  # picked in display space, stored linear


def random_scenes(n: int, seed: int = 0, min_prims: int = 1, ground_p: float = 0.7) -> Scenes:
    """n scenes of 1..MAX_PRIMS primitives placed without large overlaps around the origin (CPU)."""
    g = torch.Generator().manual_seed(seed)
    P = MAX_PRIMS
    count = torch.randint(min_prims, P + 1, (n,), generator=g)
    kind = torch.randint(SPHERE, TORUS + 1, (n, P), generator=g)
    kind[torch.arange(P)[None] >= count[:, None]] = NONE
    u = torch.rand(n, P, 3, generator=g)
    size = torch.zeros(n, P, 3)
    # sphere r 0.25-0.5; box half extents 0.15-0.45; cylinder r 0.15-0.35, half height 0.2-0.5; torus R 0.3-0.45, r 0.08-0.16
    size = torch.where((kind == SPHERE)[..., None], torch.stack([0.25 + 0.25 * u[..., 0]] * 3, -1), size)
    size = torch.where((kind == BOX)[..., None], 0.15 + 0.3 * u, size)
    cyl = torch.stack([0.15 + 0.2 * u[..., 0], 0.2 + 0.3 * u[..., 1], torch.zeros_like(u[..., 0])], -1)
    size = torch.where((kind == CYLINDER)[..., None], cyl, size)
    tor = torch.stack([0.3 + 0.15 * u[..., 0], 0.08 + 0.08 * u[..., 1], torch.zeros_like(u[..., 0])], -1)
    size = torch.where((kind == TORUS)[..., None], tor, size)
    yaw = torch.rand(n, P, generator=g) * 2 * math.pi
    tilt = torch.where(kind == TORUS, torch.rand(n, P, generator=g) * 1.2, torch.rand(n, P, generator=g) * 0.3)
    tilt = torch.where(kind == SPHERE, torch.zeros_like(tilt), tilt)
    rot = _rotation_z_then_tilt(yaw, tilt, torch.rand(n, P, generator=g) * 2 * math.pi)
    # footprint on the ground: slots on a jittered ring so objects rarely intersect
    ring = torch.where(count[:, None] == 1, torch.zeros(n, P), 0.55 + 0.25 * torch.rand(n, P, generator=g))
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    ang = phase + 2 * math.pi * torch.arange(P)[None] / count.clamp(min=1)[:, None] + 0.3 * torch.rand(n, P, generator=g)
    xy = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * ring[..., None]
    lift = half_height(kind, size, rot)
    z = lift + torch.where(torch.rand(n, P, generator=g) < 0.15, 0.3 * torch.rand(n, P, generator=g), torch.zeros(n, P))
    centre = torch.cat([xy, z[..., None]], -1)
    albedo = random_albedo((n, P), g)
    ground = torch.rand(n, generator=g) < ground_p
    ground_albedo = random_albedo((n,), g) * 0.6 + 0.15
    return Scenes(kind, centre, rot, size, albedo, ground, ground_albedo)


def bounding_radius(kind: Tensor, size: Tensor) -> Tensor:
    """Radius of a sphere around each primitive's centre that holds all of it."""
    r = size[..., 0]
    r = torch.where(kind == BOX, size.norm(dim=-1), r)
    r = torch.where(kind == CYLINDER, torch.sqrt(size[..., 0] ** 2 + size[..., 1] ** 2), r)
    r = torch.where(kind == TORUS, size[..., 0] + size[..., 1], r)
    return r


def half_height(kind: Tensor, size: Tensor, rot: Tensor) -> Tensor:
    """Half of each primitive's vertical extent (so ``centre.z = half_height`` rests it on z = 0)."""
    zrow = rot[..., 2, :].abs()  # |world z| of each local axis
    box = (zrow * size).sum(-1)
    cyl = zrow[..., 2] * size[..., 1] + torch.sqrt((1 - zrow[..., 2] ** 2).clamp(min=0)) * size[..., 0]
    tor = torch.sqrt((1 - zrow[..., 2] ** 2).clamp(min=0)) * size[..., 0] + size[..., 1]
    h = size[..., 0]
    h = torch.where(kind == BOX, box, h)
    h = torch.where(kind == CYLINDER, cyl, h)
    return torch.where(kind == TORUS, tor, h)


def sun(azimuth: Tensor, elevation: Tensor, colour: Tensor, ambient: float | Tensor = 0.08) -> Lights:
    """Sun from world azimuth/elevation (radians, azimuth from +x towards +y)."""
    d = torch.stack([torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)], -1)
    return Lights(d, colour, torch.as_tensor(ambient, dtype=colour.dtype).expand_as(colour).clone())
