"""Adapters that turn any network into a VE denoiser ``D(x, sigma) -> x0_hat`` (DESIGN §3.1).

Convention for the state ``x`` (VE form, x = x0 + sigma * eps):
- finite sigma: ``x`` is the VE latent itself;
- ``sigma = inf`` (pure noise, the start of flow-matching schedules): ``x`` holds ``x / sigma``,
  i.e. the unit noise ``eps``. Every adapter and step handles that limit explicitly.

Each adapter also says how a fresh start at noise level sigma is scaled (``prior_scale``):
the noise a model of that family was trained to see at sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

Tensor = torch.Tensor


class Denoiser(Protocol):
    """What the coupled sampler needs from a model: its clean-latent prediction in VE form."""

    sigma_max: float

    def __call__(self, x: Tensor, sigma: float) -> Tensor: ...

    def prior_scale(self, sigma: float) -> float: ...


def vp_scale(sigma: float) -> float:
    """c_in = 1/sqrt(1 + sigma^2): VE state -> VP state (the x_t a DDPM network sees)."""
    return 1.0 if math.isinf(sigma) else 1.0 / math.sqrt(1.0 + sigma * sigma)


class DiscreteDenoiser:
    """eps- or v-prediction model trained on a discrete DDPM table (SD family, SEVA).

    ``model(x_vp, t)`` receives the VP-scaled latent and a timestep tensor (one per batch item)
    and returns eps or v. ``sigma_table[t]`` is the VE sigma of training timestep t (ascending).
    ``timestep="nearest"`` quantises sigma to the table (SEVA's denoiser does this);
    ``"interp"`` passes a fractional timestep interpolated in log-sigma.
    """

    def __init__(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        sigma_table: Tensor,
        prediction: str = "epsilon",
        timestep: str = "nearest",
        quantize_sigma: bool = False,
    ) -> None:
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction must be 'epsilon' or 'v_prediction', got {prediction!r}")
        if timestep not in ("nearest", "interp"):
            raise ValueError(f"timestep must be 'nearest' or 'interp', got {timestep!r}")
        self.model = model
        self.sigma_table = sigma_table.to(torch.float64).cpu()
        self.log_table = self.sigma_table.log()
        self.prediction = prediction
        self.timestep = timestep
        self.quantize_sigma = quantize_sigma
        self.sigma_max = float(self.sigma_table[-1])
        self.sigma_min = float(self.sigma_table[0])

    def timestep_for(self, sigma: float) -> float:
        idx = int(torch.argmin((self.sigma_table - sigma).abs()))
        if self.timestep == "nearest":
            return float(idx)
        ls = math.log(max(sigma, 1e-30))
        if ls <= float(self.log_table[0]):
            return 0.0
        if ls >= float(self.log_table[-1]):
            return float(len(self.sigma_table) - 1)
        hi = int(torch.searchsorted(self.log_table, torch.tensor(ls, dtype=torch.float64)))
        lo = hi - 1
        w = (ls - float(self.log_table[lo])) / float(self.log_table[hi] - self.log_table[lo])
        return lo + w

    def prior_scale(self, sigma: float) -> float:
        # a VP model's x_T is unit noise: x_ve = eps * sqrt(1 + sigma^2)
        return 1.0 if math.isinf(sigma) else math.sqrt(1.0 + sigma * sigma)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        if math.isinf(sigma):
            raise ValueError("a discrete DDPM model has no prediction at sigma = inf; start at its sigma_max")
        t = self.timestep_for(sigma)
        if self.quantize_sigma:
            sigma = float(self.sigma_table[int(round(t))])
        c_in = vp_scale(sigma)
        x_vp = x * c_in
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32 if self.timestep == "interp" else torch.long)
        out = self.model(x_vp, t_batch)
        if self.prediction == "epsilon":
            return x - sigma * out
        # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  x0 = sqrt(abar) x_vp - sqrt(1 - abar) v
        return c_in * x_vp - sigma * c_in * out


class FlowDenoiser:
    """Rectified-flow model (Flux, Wan): x_fm = (1 - s) x0 + s eps, network predicts v = eps - x0.

    VE sigma = s / (1 - s) and x_ve = x_fm / (1 - s) = x_fm * (1 + sigma), so the network input is
    ``x_ve / (1 + sigma)`` and ``x0 = x_fm - s * v``. ``model(x_fm, s)`` gets s in [0, 1] as a
    per-item tensor; callers scale it to whatever their network expects (Flux: s, Wan: 1000 s).
    """

    sigma_max = math.inf

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.model = model

    @staticmethod
    def flow_s(sigma: float) -> float:
        return 1.0 if math.isinf(sigma) else sigma / (1.0 + sigma)

    def prior_scale(self, sigma: float) -> float:
        # x_fm at s is mostly noise: a fresh start is x_fm = eps, i.e. x_ve = eps * (1 + sigma)
        return 1.0 if math.isinf(sigma) else 1.0 + sigma

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        s = self.flow_s(sigma)
        x_fm = x if math.isinf(sigma) else x / (1.0 + sigma)
        s_batch = torch.full((x.shape[0],), s, device=x.device, dtype=torch.float32)
        v = self.model(x_fm, s_batch)
        return x_fm - s * v


class EDMDenoiser:
    """A model that is already a VE denoiser ``f(x, sigma) -> x0`` (analytic tests, EDM nets)."""

    def __init__(self, fn: Callable[[Tensor, float], Tensor], sigma_max: float = math.inf) -> None:
        self.fn = fn
        self.sigma_max = sigma_max

    def prior_scale(self, sigma: float) -> float:
        return 1.0 if math.isinf(sigma) else sigma

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        return self.fn(x, sigma)
