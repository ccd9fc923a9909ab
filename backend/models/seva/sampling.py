"""SEVA's denoiser, guiders and Euler-EDM sampler (research/seva.md §4).

``SevaDenoiser`` is the reference's discrete denoiser (quantised sigma, clean-latent replacement
of conditioning frames, eps -> x0). ``sample_euler_edm`` reproduces the reference sampler with
its quirks (sigma_hat = sigma + 1e-6 in float32, one noise draw every step) for bit-level parity.
``SevaWindowDenoiser`` wraps a conditioned window as a VE denoiser ``D(x, sigma)`` so the coupled
sampler drives SEVA without any SEVA-specific code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...sampling import schedules
from .cameras import camera_distances, window_cameras
from .network import SevaNet

Tensor = torch.Tensor
SIGMA_TABLE = schedules.seva_sigma_table().to(torch.float32)  # ascending, index = timestep
COND_KEYS = ("crossattn", "concat", "dense_vector", "replace")


def quantise(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest table entry: (timestep index, quantised sigma), per element."""
    table = SIGMA_TABLE.to(sigma.device)
    idx = (sigma.to(torch.float32)[:, None] - table[None]).abs().argmin(dim=1)
    return idx, table[idx]


def seva_schedule(num_steps: int) -> Tensor:
    """Descending float32 sigmas of an n-step run with a final 0 (the reference's discretisation)."""
    return schedules.discrete_schedule(SIGMA_TABLE.to(torch.float64), num_steps, "seva").to(torch.float32)


@dataclass
class DenoiserTrace:
    idx: Tensor
    sigma_q: Tensor
    c_in: Tensor
    x_replaced: Tensor
    network_input: Tensor
    network_output: Tensor


class SevaDenoiser:
    """D = x_r - sigma_q * eps(c_in * x_r, mask, Plücker), per frame of a (CFG) batch."""

    def __init__(self, net: SevaNet) -> None:
        self.net = net

    def __call__(self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor], num_frames: int, trace: bool = False):
        idx, sq = quantise(sigma)
        c_in = 1.0 / torch.sqrt(sq**2 + 1.0)
        x_r = x
        if "replace" in cond:
            latent, mask = cond["replace"][:, :4], cond["replace"][:, 4:5]
            x_r = x * (1 - mask) + latent * mask
        net_in = torch.cat([x_r * c_in.view(-1, 1, 1, 1), cond["concat"]], dim=1)
        eps = self.net(net_in, idx, cond["crossattn"], cond["dense_vector"], num_frames).to(torch.float32)
        d = x_r - sq.view(-1, 1, 1, 1) * eps
        if trace:
            return d, DenoiserTrace(idx, sq, c_in, x_r, net_in, eps)
        return d


# --- guidance ----------------------------------------------------------------------------------


def close_to_conditioning(c2w: Tensor, K: Tensor, cond_mask: Tensor) -> Tensor:
    """Frames SEVA treats as re-renders of a conditioning frame (< 10 deg, < 1e-5 apart, same K)."""
    cond = cond_mask.bool()
    ang, trans = camera_distances(c2w[cond], c2w)  # (n_cond, T)
    same_k = (K[cond][:, None] == K[None]).flatten(2).all(dim=-1).any(dim=0)
    return (ang.min(dim=0).values < 10) & (trans.min(dim=0).values < 1e-5) & same_k | cond


def guidance_scales(guider: int, cfg: float, cfg_min: float, c2w: Tensor, K: Tensor, cond_mask: Tensor) -> Tensor:
    """Per-frame CFG scale: 0 vanilla, 1 multiview (cfg_min near inputs), 2 multiview-temporal ramp."""
    T = len(cond_mask)
    if guider == 0:
        return torch.full((T,), float(cfg))
    if guider not in (1, 2):
        raise ValueError(f"guider must be 0, 1 or 2, got {guider}")
    if guider == 1:
        s = torch.full((T,), float(cfg))
    else:
        slots = torch.arange(T, dtype=torch.float32)
        cond_slots = slots[cond_mask.bool()]
        delta = (slots[:, None] - cond_slots[None]).abs().min(dim=1).values
        delta = delta / torch.clamp(delta.max(), min=1.0)
        s = delta * (cfg - cfg_min) + cfg_min
    return torch.where(close_to_conditioning(c2w, K, cond_mask), torch.full_like(s, float(cfg_min)), s)


def guide(d_batch: Tensor, scales: Tensor) -> Tensor:
    """CFG on a batch [uncond; cond]: D_u + s_t (D_c - D_u)."""
    d_u, d_c = d_batch.chunk(2)
    return d_u + scales.view(-1, 1, 1, 1).to(d_u) * (d_c - d_u)


def cfg_batch(uncond: dict[str, Tensor], cond: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.cat([uncond[k], cond[k]]) for k in COND_KEYS}


def build_conditioning(plucker: Tensor, cond_mask: Tensor, clean_latents: Tensor, clip_embedding: Tensor) -> tuple[dict, dict]:
    """(uncond, cond) per-frame dicts (§4.3); ``clean_latents`` are the conditioning slots' latents in order."""
    T, _, h, w = plucker.shape
    m = cond_mask.bool()
    mask = m.to(torch.float32).view(T, 1, 1, 1).expand(T, 1, h, w)
    replace = torch.zeros(T, 5, h, w)
    replace[m, :4] = clean_latents.to(torch.float32)
    replace[m, 4] = 1.0
    ctx = clip_embedding.to(torch.float32).reshape(1, 1, -1).expand(T, 1, -1).clone()
    cond = {"crossattn": ctx, "concat": torch.cat([mask, plucker], 1), "dense_vector": plucker, "replace": replace}
    uncond = {
        "crossattn": torch.zeros_like(ctx),
        "concat": torch.cat([torch.zeros_like(mask), plucker], 1),
        "dense_vector": plucker,
        "replace": torch.zeros_like(replace),
    }
    return uncond, cond


def window_conditioning(
    c2ws: Tensor,
    Ks: Tensor,
    cond_mask: Tensor,
    cond_latents: Tensor,
    clip_embedding: Tensor,
    all_c2ws: Tensor,
    image_hw: tuple[int, int],
    camera_scale: float,
    guider: int,
    cfg: float,
    cfg_min: float,
) -> tuple[dict, dict, Tensor]:
    """What one window is sampled with: (uncond, cond) dicts and per-frame guidance scales.

    Cameras are normalised against the whole scene (``all_c2ws``); ``cond_latents`` are the VAE
    latents of the conditioning slots in order, ``clip_embedding`` their mean CLIP embedding.
    """
    wc = window_cameras(c2ws, Ks, all_c2ws, image_hw, camera_scale)
    uncond, cond = build_conditioning(wc.plucker, cond_mask, cond_latents, clip_embedding)
    return uncond, cond, guidance_scales(guider, cfg, cfg_min, wc.c2w, wc.K, cond_mask)


# --- the reference sampler -----------------------------------------------------------------


@dataclass
class StepRecord:
    sigma_hat: Tensor
    x_noised: Tensor
    denoised_cfg_batch: Tensor
    denoised_guided: Tensor
    x_next: Tensor


def sample_euler_edm(
    denoiser: SevaDenoiser,
    x: Tensor,
    sigmas: Tensor,
    uncond: dict[str, Tensor],
    cond: dict[str, Tensor],
    scales: Tensor,
    noise: Callable[[int, Tensor], Tensor],
    record: list[StepRecord] | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The reference's EulerEDMSampler (s_churn = 0): x starts as eps * sqrt(1 + sigma_0^2).

    ``noise(i, x)`` returns step i's standard-normal draw (the reference draws one every step,
    also where it is multiplied by 0 or by a tiny factor).
    """
    T = x.shape[0]
    batch = {k: v.to(x.device) for k, v in cfg_batch(uncond, cond).items()}
    n = len(sigmas) - 1
    for i in range(n):
        s = sigmas[i].to(x.device, torch.float32).reshape(1)
        s_hat = s + torch.tensor([1e-6], dtype=torch.float32, device=x.device)  # float32 add: 0 effect above sigma 32
        eps = noise(i, x)
        x = x + eps * torch.sqrt(s_hat**2 - s**2)
        with torch.no_grad():
            d_batch = denoiser(torch.cat([x, x]), s_hat.expand(2 * T), batch, T)
        d = guide(d_batch, scales)
        x_next = x + (sigmas[i + 1].to(x.device) - s_hat) * (x - d) / s_hat
        if record is not None:
            record.append(StepRecord(s_hat.cpu(), x, d_batch, d, x_next))
        x = x_next
        if callback:
            callback(i + 1, n)
    return x


class SevaWindowDenoiser:
    """One conditioned SEVA window as a VE denoiser for ``backend.sampling`` (guided x0 of all T slots)."""

    sigma_max = float(SIGMA_TABLE[-1])

    def __init__(self, denoiser: SevaDenoiser, uncond: dict, cond: dict, scales: Tensor, device: torch.device) -> None:
        self.denoiser = denoiser
        self.batch = {k: v.to(device) for k, v in cfg_batch(uncond, cond).items()}
        self.scales = scales.to(device)
        self.T = len(scales)

    def prior_scale(self, sigma: float) -> float:
        return math.sqrt(1.0 + sigma * sigma)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        sig = torch.full((2 * self.T,), sigma, dtype=torch.float32, device=x.device)
        with torch.no_grad():
            d_batch = self.denoiser(torch.cat([x, x]), sig, self.batch, self.T)
        return guide(d_batch, self.scales)
