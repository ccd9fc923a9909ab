"""Resampling operators R for couplings between latents of different sizes (DESIGN §3.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def resize_latents(size: tuple[int, int], mode: str = "area") -> Callable[[torch.Tensor], torch.Tensor]:
    """A map (N, C, h, w) -> (N, C, *size). ``area`` averages when shrinking; use ``bilinear`` to enlarge."""

    def resize(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x, size=size, mode=mode, **kwargs)

    return resize
