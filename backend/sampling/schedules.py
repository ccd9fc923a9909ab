"""Noise schedules, all expressed as VE noise levels sigma (x = x0 + sigma * eps).

A *schedule* here is a descending 1-D float64 tensor of sigmas that ends with 0: step i goes
from ``sigmas[i]`` to ``sigmas[i + 1]``. ``inf`` is allowed as the first entry (flow-matching
models start at pure noise, s = 1, which is sigma = inf in VE form).
"""

from __future__ import annotations

import math

import torch

# --- discrete DDPM tables (eps / v models) ---------------------------------------------------


def scaled_linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Betas evenly spaced in sqrt(beta) (SD's "scaled_linear", also SEVA's discretisation)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2


def linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int = 1000) -> torch.Tensor:
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """VE sigma of every training timestep (ascending with t): sqrt((1 - abar) / abar)."""
    a = alphas_cumprod.to(torch.float64)
    return ((1.0 - a) / a).sqrt()


def sd_sigma_table() -> torch.Tensor:
    """Stable Diffusion 1.x/2.x table: scaled-linear 0.00085 -> 0.012 (sigma 0.029 -> 14.6)."""
    return sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(scaled_linear_betas(0.00085, 0.012)))


SEVA_LOG_SNR_SHIFT = 2.4


def seva_sigma_table() -> torch.Tensor:
    """SEVA's discretisation: scaled-linear 5e-6 -> 0.012, sigmas times e^2.4, cast to float32.

    Matches the reference's ``DDPMDiscretization`` (sigma_0 = 0.0246486, sigma_999 = 84.91633).
    """
    base = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(scaled_linear_betas(5e-6, 0.012)))
    return (base * math.exp(SEVA_LOG_SNR_SHIFT)).to(torch.float32).to(torch.float64)


def discrete_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "leading", steps_offset: int = 0) -> torch.Tensor:
    """Descending integer timesteps the way diffusers' schedulers pick them.

    ``leading``/``trailing``/``linspace`` follow diffusers' ``timestep_spacing``; ``seva`` is
    SEVA's ``floor(linspace(999, 0, n, endpoint=False))``.
    """
    if num_steps < 1 or num_steps > num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    T = num_train_timesteps
    if spacing == "leading":
        ratio = T // num_steps
        ts = (torch.arange(num_steps, dtype=torch.float64) * ratio).round() + steps_offset
    elif spacing == "trailing":
        ratio = T / num_steps
        ts = (torch.arange(T, 0, -ratio, dtype=torch.float64)).round() - 1
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, num_steps, dtype=torch.float64).round()
    elif spacing == "seva":
        ts = torch.tensor([math.floor(v) for v in torch.linspace(T - 1, 0, num_steps + 1, dtype=torch.float64)[:-1]]).flip(0)
        ts = ts.to(torch.float64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use leading, trailing, linspace or seva")
    return ts.flip(0).long()


def discrete_schedule(sigma_table: torch.Tensor, num_steps: int, spacing: str = "leading", steps_offset: int = 0) -> torch.Tensor:
    """Descending sigmas (with a final 0) of a discrete model sampled in ``num_steps`` steps."""
    ts = discrete_timesteps(len(sigma_table), num_steps, spacing, steps_offset)
    return torch.cat([sigma_table[ts], torch.zeros(1, dtype=torch.float64)])


# --- continuous schedules ----------------------------------------------------------------------


def karras_schedule(sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022) schedule with a final 0."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def flow_sigmas_to_ve(s: torch.Tensor) -> torch.Tensor:
    """Flow-matching noise fraction s (x = (1-s) x0 + s eps) to VE sigma = s / (1 - s); s=1 -> inf."""
    s = s.to(torch.float64)
    out = torch.where(s >= 1.0, torch.full_like(s, math.inf), s / (1.0 - s).clamp_min(1e-300))
    return out


def ve_to_flow_sigma(sigma: float) -> float:
    """Inverse of :func:`flow_sigmas_to_ve`: s = sigma / (1 + sigma); inf -> 1."""
    return 1.0 if math.isinf(sigma) else sigma / (1.0 + sigma)


def flux_time_shift(mu: float, s: torch.Tensor) -> torch.Tensor:
    """Exponential time shift of the flow sigmas (diffusers' dynamic shifting, sigma exponent 1)."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))


def flux_mu(
    image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15
) -> float:
    """Resolution-dependent shift ``mu`` (linear in the number of packed image tokens)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def flow_schedule(num_steps: int, *, shift: float = 1.0, mu: float | None = None) -> torch.Tensor:
    """Flow-matching schedule as diffusers' ``FlowMatchEulerDiscreteScheduler`` builds it, in VE sigmas.

    Base grid s = linspace(1, 1/n, n); then either a dynamic shift ``mu`` (Flux) or a static
    ``shift`` (Wan, SD3): s' = shift*s / (1 + (shift-1)*s). A final 0 is appended.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    s = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    if mu is not None:
        s = flux_time_shift(mu, s)
    else:
        s = shift * s / (1 + (shift - 1) * s)
    s = s.to(torch.float32).to(torch.float64)  # the scheduler keeps float32 sigmas
    return torch.cat([flow_sigmas_to_ve(s), torch.zeros(1, dtype=torch.float64)])


def validate_schedule(sigmas: torch.Tensor, name: str = "schedule") -> None:
    # The last sigma is 0, or a scheduler's final noise level: DDIM with set_alpha_to_one=False ends
    # at abar_0 (sigma ~0.029 for SD), and a model trained that way is reproduced exactly.
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"{name}: need a 1-D schedule with at least 2 entries (the last one 0 or a final noise level)")
    if not sigmas[-1] >= 0:
        raise ValueError(f"{name}: the last sigma must be >= 0, got {float(sigmas[-1])}")
    if not bool((sigmas[:-1] > sigmas[1:]).all()):
        raise ValueError(f"{name}: sigmas must be strictly decreasing")
