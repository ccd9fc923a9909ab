"""ControlNet stylisation (research/editors.md §2): SD1.5 img2img + one or more ControlNets.

Every view keeps its structure through control images computed from its exact passes
(``control_images``) while the prompt changes the style; ``strength`` < 1 starts from the
view's own latent noised to the matching step (img2img), so the editor runs the last
``int(steps * strength)`` steps, like diffusers' ControlNet img2img pipeline. Several
ControlNets add their residuals (as diffusers' MultiControlNetModel does); each is active
between ``start`` and ``end`` (fractions of the run) with its own conditioning scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...sampling import DiscreteDenoiser, Participant
from ..weights import build_pipeline, friendly_hub_errors, pick_device, resolve_source, torch_dtype, weights_location
from . import guide, guided
from .control_images import KINDS
from .sd_base import SDEditor, keep_16bit_vae_safe

Tensor = torch.Tensor
DEFAULT_NEGATIVE = "lowres, blurry, deformed, worst quality"


@dataclass
class StyleConditions:
    """Per view: one control image per ControlNet ((N, 3, H, W) in [0, 1]) and the img2img source latents."""

    controls: list[Tensor]
    init: Tensor  # (N, 4, h, w) scaled VAE latents of the views themselves

    def __len__(self) -> int:
        return len(self.init)

    def __getitem__(self, idx) -> StyleConditions:
        idx = list(idx) if not isinstance(idx, slice) else idx
        return StyleConditions([c[idx] for c in self.controls], self.init[idx])


@dataclass
class ControlNetEditor(SDEditor):
    nets: list = field(default_factory=list)  # ControlNetModel per kind
    kinds: list[str] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    start: float = 0.0
    end: float = 1.0
    strength: float = 0.75

    def __post_init__(self) -> None:
        if len(self.nets) != len(self.kinds) or not self.nets:
            raise ValueError(f"one ControlNet per control kind: {len(self.nets)} nets for kinds {self.kinds}")
        self.scales = list(self.scales) or [1.0] * len(self.nets)
        if len(self.scales) != len(self.nets):
            raise ValueError(f"give one conditioning scale per ControlNet ({len(self.nets)}), got {self.scales}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"ControlNet start/end must satisfy 0 <= start < end <= 1, got {self.start}, {self.end}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"img2img strength must be in (0, 1], got {self.strength}")

    default_negative = DEFAULT_NEGATIVE

    def describe(self) -> dict:
        return {"editor": "controlnet", "controls": self.kinds, "scales": self.scales, "start": self.start, "end": self.end,
                "strength": self.strength}  # fmt: skip

    def view_conditions(self, rgba: Sequence[np.ndarray], extras: Sequence[dict[str, np.ndarray]]) -> StyleConditions:
        """Multi-view pipeline entry: RGBA views and their control images by kind."""
        return self.conditions([a[..., :3] for a in rgba], extras)

    def conditions(self, rgb: Sequence[np.ndarray], controls: Sequence[dict[str, np.ndarray]]) -> StyleConditions:
        """rgb: (H, W, 3) 0..255 per view; controls: per view, {kind: (H, W, 3) in [0, 1]}."""
        missing = [(i, k) for i, c in enumerate(controls) for k in self.kinds if k not in c]
        if missing:
            raise ValueError(f"control images missing for (view, kind) {missing[:5]}; compute them with control_images.control_image")
        per_kind = [
            torch.stack([torch.from_numpy(np.asarray(c[k], dtype=np.float32)).permute(2, 0, 1) for c in controls]) for k in self.kinds
        ]
        x = torch.from_numpy(np.stack(rgb).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return StyleConditions(per_kind, self.encode(x))

    def img2img_schedule(self, steps: int) -> tuple[Tensor, Tensor]:
        """The last int(steps * strength) sigmas and timesteps of the full schedule (diffusers' get_timesteps)."""
        n = min(int(steps * self.strength), steps)
        if n < 1:
            raise ValueError(f"strength {self.strength} x {steps} steps leaves no step to run; raise one of them")
        return self.schedule(steps)[steps - n :], self.timesteps(steps)[steps - n :]

    def denoiser(self, conds: StyleConditions, cond: Tensor, uncond: Tensor, cfg: float, timesteps: Tensor) -> DiscreteDenoiser:
        unet = self.pipe.unet
        n = len(timesteps)
        index = {int(t): i for i, t in enumerate(timesteps)}
        cfg_on = guided(cfg)

        def eps(x_vp: Tensor, t: Tensor) -> Tensor:
            i = index[int(t[0])]
            keep = 1.0 - float(i / n < self.start or (i + 1) / n > self.end)
            x = x_vp.to(self.dtype)
            ctx = torch.cat([uncond, cond]) if cfg_on else cond
            if cfg_on:
                x, t = torch.cat([x, x]), torch.cat([t, t])
            down, mid = None, None
            with torch.no_grad():
                for net, img, scale in zip(self.nets, conds.controls, self.scales, strict=True):
                    img = img.to(self.device, self.dtype)
                    d, m = net(
                        x, t, encoder_hidden_states=ctx, controlnet_cond=torch.cat([img, img]) if cfg_on else img,
                        conditioning_scale=scale * keep, return_dict=False,
                    )  # fmt: skip
                    down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
                    mid = m if mid is None else mid + m
                out = unet(x, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)
            out = out.sample.float()
            return guide(out, cfg) if cfg_on else out

        return DiscreteDenoiser(eps, self.sigma_table(), self.prediction)

    def participant(
        self,
        name: str,
        conds: StyleConditions,
        prompt: str,
        steps: int = 30,
        cfg: float = 7.5,
        seeds: Sequence[int] | int = 0,
        negative: str = DEFAULT_NEGATIVE,
    ) -> Participant:
        """Per-view ControlNet img2img as a participant; it joins the run for its last steps."""
        n, _, h, w = conds.init.shape
        cond, uncond = self.encode_prompts(prompt, negative, n)
        sigmas, timesteps = self.img2img_schedule(steps)
        den = self.denoiser(conds, cond, uncond, cfg, timesteps)
        return Participant(name, den, (n, 4, h, w), sigmas=sigmas, seeds=seeds, device=self.device, init=conds.init.to(self.device))


def load_controlnet_editor(
    kinds: Sequence[str],
    *,
    base: str = "sd15",
    sources: dict[str, str] | None = None,
    scales: Sequence[float] = (),
    start: float = 0.0,
    end: float = 1.0,
    strength: float = 0.75,
    dtype: str = "auto",
    device: str = "auto",
) -> ControlNetEditor:
    """SD1.5 base (registry ``sd15`` by default) + the ControlNets of ``kinds`` (registry ``controlnet-<kind>``);
    ``base="tiny"`` builds tiny random ones (ControlNets copied from the tiny UNet's encoder, then perturbed)."""
    from diffusers import ControlNetModel, StableDiffusionPipeline

    from .. import tiny

    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"ControlNet kinds must be a non-empty list from {', '.join(KINDS)}, got {kinds}")
    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    if base == "tiny":
        pipe, labels = build_pipeline(StableDiffusionPipeline, "tiny", None, dt, tiny.sd_components)
        nets = []
        for j, _ in enumerate(kinds):
            net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 8, 16, 16))  # x8 like the VAE
            torch.manual_seed(100 + j)
            with torch.no_grad():  # from_unet zero-initialises the residual convs: give them weights
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            nets.append(net.to(dt))
    else:
        source, e = resolve_source(base)
        pipe, labels = build_pipeline(
            StableDiffusionPipeline, source, e, dt, tiny.sd_components, safety_checker=None, requires_safety_checker=False
        )
        nets = []
        for k in kinds:
            repo = (sources or {}).get(k) or weights_location(f"controlnet-{k}")
            with friendly_hub_errors(repo):
                nets.append(ControlNetModel.from_pretrained(repo, torch_dtype=dt))
    keep_16bit_vae_safe(pipe, dev)
    pipe.to(dev)
    nets = [n.to(dev).eval() for n in nets]
    return ControlNetEditor(pipe, dev, dt, labels, nets, kinds, list(scales), start, end, strength)
