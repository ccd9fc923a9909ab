"""Analytic Gaussian participants: data ~ N(mu, diag(var)), whose exact denoiser is linear.

E[x0 | x0 + sigma*eps = x] = mu + var / (var + sigma^2) * (x - mu), so every coupled step is an
affine map of the state and the injected noise, and means and covariances can be propagated
exactly by an independent recursion (see test_coupled_sampler.py).
"""

from __future__ import annotations

import math

import torch

from backend.sampling import EDMDenoiser, Participant


def gaussian_denoiser(mu: torch.Tensor, var: torch.Tensor, sigma_max: float = math.inf) -> EDMDenoiser:
    def fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
        if math.isinf(sigma):
            return mu.expand_as(x).clone()
        return mu + var / (var + sigma * sigma) * (x - mu)

    return EDMDenoiser(fn, sigma_max=sigma_max)


class ScriptedParticipant(Participant):
    """A participant whose 'random' noise comes from a script (zeros, or one unit impulse).

    Lets a test read the sampler's affine map exactly: zeros give the mean, an impulse at noise
    scalar k gives column k of the noise-to-output matrix.
    """

    impulse: int | None = None  # index into the flattened sequence of all noise this participant draws

    def generators(self):  # noqa: D401 - counter instead of generators
        self._drawn = 0
        return [torch.Generator()]

    def randn(self, gens):
        n = math.prod(self.shape)
        out = torch.zeros(n, dtype=self.dtype)
        if self.impulse is not None and self._drawn <= self.impulse < self._drawn + n:
            out[self.impulse - self._drawn] = 1.0
        self._drawn += n
        return out.reshape(self.shape)
