"""A batched torch ray caster for toy scenes: one primary ray per sample, Lambert shading, hard shadows.

Radiance = albedo * (ambient + colour * max(n.l, 0) * lit), which is exactly what Cycles gives
for a diffuse BSDF lit by a sun of strength pi and colour ``colour`` plus an emission of
``albedo * ambient`` with no indirect bounces (``blender.py`` builds it so). Intersections are
analytic for spheres, boxes, capped cylinders and the ground disc; tori are sphere-traced on their
exact distance function inside their bounding sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scene import BOX, CYLINDER, GROUND_RADIUS, NONE, SPHERE, TORUS, Lights, Scenes, bounding_radius

Tensor = torch.Tensor
INF = float("inf")
EPS = 1e-4
TORUS_STEPS = 48


@dataclass
class Render:
    rgb: Tensor  # (N, 3, H, W) linear radiance
    alpha: Tensor  # (N, 1, H, W) coverage in [0, 1]
    depth: Tensor  # (N, H, W) distance along the camera's z axis; 0 where nothing is hit


def srgb(linear: Tensor) -> Tensor:
    """Linear -> sRGB display values in [0, 1] (what Blender's 'Standard' view transform writes)."""
    x = linear.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _sphere(o: Tensor, d: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r**2
    disc = b * b - c
    sq = torch.sqrt(disc.clamp(min=0))
    t = torch.where(-b - sq > EPS, -b - sq, -b + sq)
    t = torch.where((disc >= 0) & (t > EPS), t, INF)
    return t, (o + t.clamp(max=1e6)[..., None] * d) / r[..., None]


def _box(o: Tensor, d: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1, t2 = (-h - o) / d, (h - o) / d
    tmin = torch.minimum(t1, t2).amax(-1)
    tmax = torch.maximum(t1, t2).amin(-1)
    t = torch.where(tmin > EPS, tmin, tmax)
    t = torch.where((tmax >= tmin) & (t > EPS), t, INF)
    p = o + t.clamp(max=1e6)[..., None] * d
    face = (p / h).abs().argmax(-1, keepdim=True)
    n = torch.zeros_like(p).scatter_(-1, face, 1.0) * torch.sign(p)
    return t, n


def _cylinder(o: Tensor, d: Tensor, r: Tensor, hh: Tensor) -> tuple[Tensor, Tensor]:
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - r**2
    disc = b * b - a * c
    sq = torch.sqrt(disc.clamp(min=0))
    a_safe = a.clamp(min=1e-12)
    ts = []
    for t in ((-b - sq) / a_safe, (-b + sq) / a_safe):
        z = o[..., 2] + t * d[..., 2]
        ts.append(torch.where((disc >= 0) & (a > 1e-12) & (z.abs() <= hh) & (t > EPS), t, INF))
    dz = torch.where(d[..., 2].abs() < 1e-9, torch.full_like(d[..., 2], 1e-9), d[..., 2])
    for sign in (-1.0, 1.0):
        t = (sign * hh - o[..., 2]) / dz
        x, y = o[..., 0] + t * d[..., 0], o[..., 1] + t * d[..., 1]
        ts.append(torch.where((x * x + y * y <= r**2) & (t > EPS), t, INF))
    t_all = torch.stack(ts, -1)
    t, which = t_all.min(-1)
    p = o + t.clamp(max=1e6)[..., None] * d
    side = torch.stack([p[..., 0], p[..., 1], torch.zeros_like(p[..., 0])], -1) / r[..., None]
    cap = torch.zeros_like(p)
    cap[..., 2] = torch.where(which == 2, -1.0, 1.0)
    return t, torch.where((which < 2)[..., None], side, cap)


def _torus(o: Tensor, d: Tensor, R: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    bound = R + r
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - bound**2
    disc = b * b - c
    sq = torch.sqrt(disc.clamp(min=0))
    t = (-b - sq).clamp(min=EPS)
    t_exit = -b + sq
    for _ in range(TORUS_STEPS):
        p = o + t[..., None] * d
        q = torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2) - R
        t = t + torch.sqrt(q * q + p[..., 2] ** 2) - r
    p = o + t[..., None] * d
    ring = torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2).clamp(min=1e-9)
    sdf = torch.sqrt((ring - R) ** 2 + p[..., 2] ** 2) - r
    hit = (disc >= 0) & (t_exit > EPS) & (sdf.abs() < 2e-3) & (t <= t_exit + 1e-3)
    centre = torch.stack([p[..., 0] / ring * R, p[..., 1] / ring * R, torch.zeros_like(ring)], -1)
    return torch.where(hit, t, INF), torch.nn.functional.normalize(p - centre, dim=-1)


def _primitive(kind: int, o_l: Tensor, d_l: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    if kind == SPHERE:
        return _sphere(o_l, d_l, size[..., 0])
    if kind == BOX:
        return _box(o_l, d_l, size)
    if kind == CYLINDER:
        return _cylinder(o_l, d_l, size[..., 0], size[..., 1])
    return _torus(o_l, d_l, size[..., 0], size[..., 1])


def intersect(scenes: Scenes, sid: Tensor, o: Tensor, d: Tensor, any_hit: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit per ray. o, d: (R, 3) world rays; ``sid`` (R,) the scene of each ray.

    Returns (t (R,), world normal (R, 3), albedo (R, 3)); t = inf where nothing is hit. Per slot,
    only rays that enter the primitive's bounding sphere before the nearest hit so far are cast
    (most pixels see no object, and the torus march is the costly part). ``any_hit``: primitives
    only, for shadow rays (the ground is below everything and never occludes).
    """
    R = o.shape[0]
    best = torch.full((R,), INF, device=o.device)
    normal = torch.zeros(R, 3, device=o.device)
    albedo = torch.zeros(R, 3, device=o.device)
    radius = bounding_radius(scenes.kind, scenes.size)
    for p in range(scenes.kind.shape[1]):
        kind_p = scenes.kind[sid, p]
        o_w = o - scenes.centre[sid, p]
        b = (o_w * d).sum(-1)
        disc = b * b - ((o_w * o_w).sum(-1) - radius[sid, p] ** 2)
        sq = torch.sqrt(disc.clamp(min=0))
        cand = (kind_p != NONE) & (disc >= 0) & (-b + sq > EPS) & (-b - sq < best)
        for kind in (SPHERE, BOX, CYLINDER, TORUS):
            idx = (cand & (kind_p == kind)).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            s_i = sid[idx]
            rot = scenes.rot[s_i, p]  # (M, 3, 3) local -> world
            o_l = (o_w[idx, None] @ rot)[:, 0]
            d_l = (d[idx, None] @ rot)[:, 0]
            t, n_l = _primitive(kind, o_l, d_l, scenes.size[s_i, p])
            n_w = (n_l[:, None] @ rot.transpose(-1, -2))[:, 0]
            closer = t < best[idx]
            best[idx] = torch.where(closer, t, best[idx])
            normal[idx] = torch.where(closer[:, None], n_w, normal[idx])
            albedo[idx] = torch.where(closer[:, None], scenes.albedo[s_i, p], albedo[idx])
    if any_hit:
        return best, normal, albedo
    # the ground disc at z = 0 (hit from above only)
    dz = d[:, 2]
    down = dz < -1e-9
    tg = torch.where(down, -o[:, 2] / torch.where(down, dz, -torch.ones_like(dz)), torch.full_like(dz, INF))
    pg = o + tg.clamp(max=1e6)[:, None] * d
    on = scenes.ground[sid] & (o[:, 2] > 0) & (pg[:, 0] ** 2 + pg[:, 1] ** 2 <= GROUND_RADIUS**2) & (tg > EPS)
    closer = on & (tg < best)
    best = torch.where(closer, tg, best)
    normal = torch.where(closer[:, None], torch.tensor([0.0, 0.0, 1.0], device=o.device).expand_as(normal), normal)
    albedo = torch.where(closer[:, None], scenes.ground_albedo[sid], albedo)
    return best, normal, albedo


def camera_rays(K: Tensor, c2w: Tensor, H: int, W: int, ss: int) -> tuple[Tensor, Tensor, Tensor]:
    """World origins/directions (N, H*W*ss*ss, 3) and each ray's camera-z per unit length, row-major pixels."""
    dev = K.device
    sub = (torch.arange(ss, device=dev, dtype=torch.float32) + 0.5) / ss
    ys = (torch.arange(H, device=dev, dtype=torch.float32)[:, None] + sub[None]).reshape(-1)
    xs = (torch.arange(W, device=dev, dtype=torch.float32)[:, None] + sub[None]).reshape(-1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H*ss, W*ss)
    pix = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)
    cam = pix @ torch.linalg.inv(K).transpose(-1, -2)  # (N, S, 3)
    cam = torch.nn.functional.normalize(cam, dim=-1)
    d = cam @ c2w[:, :3, :3].transpose(-1, -2)
    o = c2w[:, None, :3, 3].expand_as(d)
    return o.contiguous(), d.contiguous(), cam[..., 2]


def render(scenes: Scenes, lights: Lights, K: Tensor, c2w: Tensor, H: int, W: int, ss: int = 2, chunk: int = 64) -> Render:
    """Render N views; ``scenes`` and ``lights`` hold one entry per view (index a batch first).

    ``ss``: samples per pixel along each axis (box filter, like Cycles' 1-pixel box). Views are
    rendered ``chunk`` at a time to bound memory.
    """
    outs = [
        _render_chunk(scenes.index(slice(i, i + chunk)), lights.index(slice(i, i + chunk)), K[i : i + chunk], c2w[i : i + chunk], H, W, ss)
        for i in range(0, len(K), chunk)
    ]
    return Render(*(torch.cat(x) for x in zip(*((r.rgb, r.alpha, r.depth) for r in outs), strict=True)))


def _render_chunk(scenes: Scenes, lights: Lights, K: Tensor, c2w: Tensor, H: int, W: int, ss: int) -> Render:
    N = len(K)
    o, d, zcam = camera_rays(K.float(), c2w.float(), H, W, ss)
    S = o.shape[1]
    sid = torch.arange(N, device=o.device).repeat_interleave(S)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    t, n, albedo = intersect(scenes, sid, o, d)
    hit = torch.isfinite(t)
    rad = torch.zeros_like(o)
    h = hit.nonzero().squeeze(1)  # shade (and cast shadow rays for) the rays that hit something
    if h.numel():
        n_h, d_h, s_h = n[h], d[h], sid[h]
        n_h = torch.where(((n_h * d_h).sum(-1) > 0)[:, None], -n_h, n_h)  # face the viewer
        p = o[h] + t[h, None] * d_h
        L = lights.direction[s_h]
        cos = (n_h * L).sum(-1).clamp(min=0)
        t_shadow, _, _ = intersect(scenes, s_h, p + n_h * 2e-3, L.contiguous(), any_hit=True)
        lit = (~torch.isfinite(t_shadow)).float() * (cos > 0)
        rad[h] = albedo[h] * (lights.ambient[s_h] + lights.colour[s_h] * (cos * lit)[:, None])
    depth = torch.where(hit, t, 0.0).view(N, S) * zcam

    def pool(x: Tensor) -> Tensor:  # (N*S, C) -> (N, C, H, W), mean over ss x ss samples
        C = x.shape[-1]
        x = x.reshape(N, H, ss, W, ss, C).mean(dim=(2, 4))
        return x.permute(0, 3, 1, 2)

    alpha = pool(hit.float()[:, None])
    rgb = pool(rad)
    # depth: nearest sample's depth per pixel (no averaging across an edge)
    dep = depth.reshape(N, H, ss, W, ss).permute(0, 1, 3, 2, 4).reshape(N, H, W, ss * ss)
    dep = torch.where(dep > 0, dep, INF).amin(-1)
    return Render(rgb, alpha, torch.where(torch.isfinite(dep), dep, 0.0))
