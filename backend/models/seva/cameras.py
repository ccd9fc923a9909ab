"""SEVA's camera conditioning (research/seva.md §3), pure functions on tensors.

Conventions: c2w in OpenCV (x right, y down, z forward); K *normalised* (row 0 / W, row 1 / H)
unless a function says pixel; Plücker maps at latent resolution, rays through pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
DEFAULT_FOV = 0.9424778  # rad, 54 degrees across the longer image side


def homogenise(c2w: Tensor) -> Tensor:
    """(N, 3, 4) or (N, 4, 4) -> (N, 4, 4)."""
    if c2w.shape[-2:] == (4, 4):
        return c2w.clone()
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=c2w.dtype, device=c2w.device).expand(*c2w.shape[:-2], 1, 4)
    return torch.cat([c2w, bottom], dim=-2)


def default_intrinsics(fov: float | Tensor = DEFAULT_FOV, aspect: float = 1.0) -> Tensor:
    """Normalised K for a field of view spanning the longer side; (N, 3, 3) for a batch of fovs."""
    fov_t = torch.as_tensor(fov, dtype=torch.float64 if isinstance(fov, Tensor) and fov.dtype == torch.float64 else torch.float32)
    fov_t = fov_t.reshape(-1)
    f = 0.5 / torch.tan(fov_t / 2)
    if aspect >= 1.0:
        fx, fy = f, f * aspect
    else:
        fy, fx = f, f / aspect
    K = torch.zeros(len(fov_t), 3, 3, dtype=fov_t.dtype)
    K[:, 0, 0], K[:, 1, 1] = fx, fy
    K[:, 0, 2] = K[:, 1, 2] = 0.5
    K[:, 2, 2] = 1.0
    return K


def normalise_pixel_K(K: Tensor, width: int, height: int) -> Tensor:
    """Pixel intrinsics -> normalised (row 0 / W, row 1 / H)."""
    out = K.clone().to(torch.float32)
    out[..., 0, :] /= width
    out[..., 1, :] /= height
    return out


@dataclass
class SceneCentre:
    median: Tensor
    distances: Tensor
    threshold: Tensor
    valid: Tensor
    centroid: Tensor


def robust_centroid(all_c2ws: Tensor) -> SceneCentre:
    """Lower per-coordinate median, drop cameras beyond min(10 * q_0.97, 1e6), mean of the rest."""
    p = all_c2ws[:, :3, 3].to(torch.float32)
    median = p.median(dim=0).values  # torch's median is the lower middle value
    dist = (p - median).norm(dim=-1)
    threshold = torch.clamp(10 * torch.quantile(dist, 0.97), max=1e6)
    valid = dist <= threshold
    return SceneCentre(median, dist, threshold.reshape(1), valid, p[valid].mean(dim=0))


@dataclass
class WindowCameras:
    c2w: Tensor  # (T, 4, 4) centred and scaled
    K: Tensor  # (T, 3, 3) normalised, unchanged
    plucker: Tensor  # (T, 6, h, w)
    scale: float
    centre: SceneCentre


def normalise_window(c2ws: Tensor, Ks: Tensor, all_c2ws: Tensor, camera_scale: float = 2.0) -> tuple[Tensor, float, SceneCentre]:
    """Centre the window on the scene's robust centroid, scale so slot 0 sits at ``camera_scale``."""
    c2w = homogenise(c2ws.to(torch.float32))
    centre = robust_centroid(all_c2ws)
    c2w[:, :3, 3] = c2w[:, :3, 3] - centre.centroid
    t0 = c2w[0, :3, 3].norm()
    scale = camera_scale if float(t0.abs()) <= 1e-5 else camera_scale / float(t0)
    c2w[:, :3, 3] = c2w[:, :3, 3] * scale
    return c2w, scale, centre


def plucker(c2w: Tensor, K: Tensor, h: int, w: int, ref: int = 0) -> Tensor:
    """(T, 6, h, w) Plücker map [d, o x d] in camera ``ref``'s frame; K normalised, pixel centres +0.5."""
    c2w = homogenise(c2w.to(torch.float32))
    rel = torch.linalg.inv(c2w[ref]) @ c2w  # camera t -> camera ref
    R, o = rel[:, :3, :3], rel[:, :3, 3]
    Kl = K.to(torch.float32).clone()
    Kl[:, 0] *= w
    Kl[:, 1] *= h
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # (h*w, 3) row-major
    rays = torch.einsum("tij,tjk,nk->tni", R, torch.linalg.inv(Kl), q)
    d = rays / rays.norm(dim=-1, keepdim=True)
    m = torch.cross(o[:, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, m], dim=-1).permute(0, 2, 1).reshape(-1, 6, h, w)


def window_cameras(c2ws: Tensor, Ks: Tensor, all_c2ws: Tensor, image_hw: tuple[int, int], camera_scale: float = 2.0) -> WindowCameras:
    """Everything SEVA needs per window: normalised c2w, K and the Plücker map at latent size."""
    c2w, scale, centre = normalise_window(c2ws, Ks, all_c2ws, camera_scale)
    H, W = image_hw
    return WindowCameras(c2w, Ks.to(torch.float32), plucker(c2w, Ks, H // 8, W // 8), scale, centre)


def camera_distances(src_c2ws: Tensor, dst_c2ws: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise (rotation angle in degrees, translation distance), shapes (S, D)."""
    Rs, Rd = src_c2ws[:, :3, :3].to(torch.float32), dst_c2ws[:, :3, :3].to(torch.float32)
    tr = torch.einsum("sij,dij->sd", Rs, Rd)  # trace(Rs Rd^T)
    angle = torch.rad2deg(torch.arccos(torch.clamp((tr - 1) / 2, -1.0, 1.0)))
    trans = torch.cdist(src_c2ws[:, :3, 3].to(torch.float32), dst_c2ws[:, :3, 3].to(torch.float32))
    return angle, trans


def look_at(position: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV c2w looking from ``position`` at ``target``: columns [right, down, forward].

    Batched over leading axes: positions/targets (..., 3) give (..., 4, 4)."""
    forward = target - position
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up.expand_as(forward), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    down = down / down.norm(dim=-1, keepdim=True)
    c2w = torch.eye(4, dtype=position.dtype).expand(*position.shape[:-1], 4, 4).clone()
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, forward, position
    return c2w


def orbit(start_c2w: Tensor, centre: Tensor, up: Tensor, n: int) -> Tensor:
    """n cameras around ``centre`` about axis ``up``, starting at ``start_c2w``, each looking at the centre."""
    up = up / up.norm()
    p0 = start_c2w[:3, 3] - centre
    out = []
    for k in range(n):
        theta = 2 * math.pi * k / n
        # Rodrigues rotation of p0 about up
        p = p0 * math.cos(theta) + torch.linalg.cross(up, p0) * math.sin(theta) + up * (up @ p0) * (1 - math.cos(theta))
        out.append(look_at(p + centre, centre, up))
    return torch.stack(out)


def preset_trajectory(
    option: str,
    num_frames: int,
    target: Tensor,
    up: Tensor,
    start_c2w: Tensor | None = None,
    fov: float = DEFAULT_FOV,
    zoom_factor: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The reference demos' camera presets (research/seva.md §3.5): (c2w (N, 4, 4), fov (N,)).

    Implemented: orbit, lemniscate, move-{forward,backward,up,down,left,right}, zoom-in/out,
    dolly zoom-in/out, roll. (spiral is not: the spec gives no exact formula.)
    """
    start = torch.eye(4) if start_c2w is None else start_c2w.to(torch.float32)
    target, up = target.to(torch.float32), up.to(torch.float32)
    n = num_frames
    fovs = torch.full((n,), fov, dtype=torch.float64)
    if option == "orbit":
        return orbit(start, target, up, n), fovs
    ramp = torch.linspace(0.0, 0.99, n)
    p0 = start[:3, 3]
    forward = target - p0
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up / up.norm())
    right = right / right.norm()
    up_dir = up / up.norm()
    moves = {"forward": forward, "backward": -forward, "up": up_dir, "down": -up_dir, "left": -right, "right": right}
    if option.startswith("move-"):
        d = moves[option.split("-", 1)[1]]
        return torch.stack([look_at(p0 + s * d, target, up) for s in ramp]), fovs
    if option in ("zoom-in", "zoom-out"):
        z = zoom_factor or (0.28 if option == "zoom-in" else 1.5)
        return start.expand(n, 4, 4).clone(), torch.linspace(fov, fov * z, n, dtype=torch.float64)
    if option in ("dolly zoom-in", "dolly zoom-out"):
        z = zoom_factor or (0.28 if option == "dolly zoom-in" else 1.5)
        d = moves["backward" if option == "dolly zoom-in" else "forward"]
        return torch.stack([look_at(p0 + s * d, target, up) for s in ramp]), torch.linspace(fov, fov * z, n, dtype=torch.float64)
    if option == "lemniscate":  # Bernoulli's lemniscate, 60 degrees wide as seen from the target
        a = float(torch.linalg.norm(target - p0)) * math.tan(math.radians(30))
        out = []
        for k in range(n):
            t = math.pi / 2 + 2 * math.pi * k / n
            den = 1 + math.sin(t) ** 2
            pos = p0 + a * math.cos(t) / den * right - a * math.sin(t) * math.cos(t) / den * up_dir
            out.append(look_at(pos, target, up))
        return torch.stack(out), fovs
    if option == "roll":
        out = []
        for k in range(n):
            a = 2 * math.pi * k / n
            r = torch.eye(4)
            r[0, 0], r[0, 1], r[1, 0], r[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
            out.append(start @ r)
        return torch.stack(out), fovs
    raise ValueError(f"unknown or unsupported preset {option!r}")
