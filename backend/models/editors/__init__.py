"""2D editing models coupled with SEVA: IC-Light, ControlNet img2img, Neural Gaffer, Magic Fixup.

Every editor satisfies ``Editor`` (what ``pipelines.multiview_edit`` calls) and guides with
``guide`` (one classifier-free-guidance rule for all of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ...sampling import Participant


@runtime_checkable
class Editor(Protocol):
    """A 2D editor as the multi-view pipeline sees it: conditions per view, a participant per batch of views."""

    labels: list[str]  # e.g. the tiny-random-weights label; empty for real weights
    default_negative: str

    def describe(self) -> dict:
        """What ran (model, variant, settings) for the job's metadata."""
        ...

    def view_conditions(self, rgba: Sequence[np.ndarray], extras: Sequence[dict[str, Any]]) -> Any:
        """Per-view editor inputs from RGBA views (alpha 0..255) and per-view extras; indexable by view."""
        ...

    def participant(
        self, name: str, conds: Any, prompt: str, steps: int, cfg: float, seeds: Sequence[int] | int, negative: str
    ) -> Participant:
        """The coupled sampler's participant for these views (one item per view)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1] at the editor's resolution."""
        ...


def guided(cfg: float) -> bool:
    """diffusers' rule: classifier-free guidance runs only above 1 (at 1 it would change nothing)."""
    return cfg > 1.0


def guide(out: torch.Tensor, cfg: float) -> torch.Tensor:
    """Combine a batch run as [unconditional; conditional] halves: u + cfg * (c - u)."""
    u, c = out.chunk(2)
    return u + cfg * (c - u)
