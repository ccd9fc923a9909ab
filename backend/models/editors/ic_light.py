"""IC-Light relighting (research/editors.md §1): SD1.5 UNet + widened conv_in + IC-Light offsets.

fc: UNet input = [noisy latent (4) | foreground latent (4)]; fbc: + background latent (4).
The foreground is composited on flat grey 127 from the view's exact alpha (rendered views carry
it, so no matting network is needed); condition latents are the VAE posterior *mode* x 0.18215
of pixels mapped with x/127 - 1 (grey 127 encodes to 0). The network is called directly with the
concatenated input, so ``unet.config.in_channels`` stays 4 and no forward hook is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...registry import TOY_LABEL
from ...sampling import DiscreteDenoiser, Participant
from ..weights import ModelUnavailable, build_pipeline, pick_device, resolve_source, torch_dtype, weights_file, weights_location
from . import guide, guided
from .sd_base import SDEditor, keep_16bit_vae_safe

Tensor = torch.Tensor
CHANNELS = {"fc": 8, "fbc": 12}
GREY = 127.0
DEFAULT_NEGATIVE = "lowres, bad anatomy, bad hands, cropped, worst quality"


def widen_conv_in(unet: nn.Module, in_channels: int) -> None:
    """conv_in with ``in_channels`` inputs: old weights in channels 0-3, zeros after, same bias."""
    old = unet.conv_in
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new


def merge_offsets(unet: nn.Module, offsets: dict[str, Tensor]) -> None:
    """unet <- base + offset for every key (the IC-Light file is a delta against its base)."""
    base = unet.state_dict()
    missing, extra = sorted(set(base) - set(offsets)), sorted(set(offsets) - set(base))
    wrong = sorted(k for k in set(base) & set(offsets) if tuple(base[k].shape) != tuple(offsets[k].shape))
    if missing or extra or wrong:
        raise ModelUnavailable(
            f"IC-Light offsets do not fit this UNet: {len(missing)} missing, {len(extra)} unexpected, {len(wrong)} mis-shaped "
            f"(first: {(missing + extra + wrong)[:5]}); is the variant (fc/fbc) right and the base an SD1.5 UNet?"
        )
    merged = {k: (v.float() + offsets[k].to(v.device).float()).to(v.dtype) for k, v in base.items()}
    unet.load_state_dict(merged, strict=True)


def composite_on_grey(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8-range RGB (H, W, 3) and alpha in [0, 1] -> 127 + (rgb - 127) * alpha, as IC-Light expects."""
    return GREY + (rgb.astype(np.float64) - GREY) * alpha[..., None]


@dataclass
class ICLight(SDEditor):
    variant: str = "fc"  # the pipeline holds the merged UNet

    @torch.no_grad()
    def condition_latents(
        self, foregrounds: Sequence[np.ndarray], alphas: Sequence[np.ndarray], backgrounds: Sequence[np.ndarray] | None = None
    ) -> Tensor:
        """(N, 4|8, h, w): the foreground on grey (and the background for fbc), VAE mode x scale."""
        if (self.variant == "fbc") != (backgrounds is not None):
            raise ValueError("IC-Light fbc needs one background per view; fc takes none")
        imgs = [composite_on_grey(f, a) for f, a in zip(foregrounds, alphas, strict=True)]
        if backgrounds is not None:
            imgs += [b.astype(np.float64) for b in backgrounds]
        z = self.encode(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / GREY - 1.0)
        n = len(foregrounds)
        return torch.cat([z[:n], z[n:]], dim=1) if backgrounds is not None else z

    default_negative = DEFAULT_NEGATIVE

    def describe(self) -> dict:
        return {"editor": "ic-light", "variant": self.variant}

    def view_conditions(self, rgba: Sequence[np.ndarray], extras: Sequence[dict[str, np.ndarray]]) -> Tensor:
        """Multi-view pipeline entry: RGBA views (alpha 0..255) and, for fbc, a "background" per view."""
        backgrounds = None
        if self.variant == "fbc":
            missing = [i for i, e in enumerate(extras) if "background" not in e]
            if missing:
                raise ValueError(f"IC-Light fbc needs a background image for every view (missing for views {missing}); use fc or give one")
            backgrounds = [e["background"][..., :3] for e in extras]
        return self.condition_latents([a[..., :3] for a in rgba], [a[..., 3] / 255.0 for a in rgba], backgrounds)

    def denoiser(self, conds: Tensor, cond: Tensor, uncond: Tensor, cfg: float) -> DiscreteDenoiser:
        unet = self.pipe.unet

        def eps(x_vp: Tensor, t: Tensor) -> Tensor:
            inp = torch.cat([x_vp, conds.to(x_vp)], dim=1).to(self.dtype)
            with torch.no_grad():
                if not guided(cfg):
                    return unet(inp, t, encoder_hidden_states=cond).sample.float()
                out = unet(torch.cat([inp, inp]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample.float()
            return guide(out, cfg)

        return DiscreteDenoiser(eps, self.sigma_table(), self.prediction)

    def participant(
        self,
        name: str,
        conds: Tensor,
        prompt: str,
        steps: int = 25,
        cfg: float = 2.0,
        seeds: Sequence[int] | int = 0,
        negative: str = DEFAULT_NEGATIVE,
    ) -> Participant:
        """Per-view IC-Light as a coupled-sampler participant (one item per view)."""
        n, _, h, w = conds.shape
        cond, uncond = self.encode_prompts(prompt, negative, n)
        den = self.denoiser(conds, cond, uncond, cfg)
        return Participant(name, den, (n, 4, h, w), sigmas=self.schedule(steps), seeds=seeds, device=self.device)


def load_ic_light(
    variant: str = "fc",
    *,
    base: str = "ic-light-base",
    offsets: str | None = None,
    paths: Mapping[str, str] | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> ICLight:
    """Base SD1.5 (default Realistic Vision 5.1) + widened conv_in + IC-Light offsets; ``base="tiny"`` builds a tiny random one."""
    from diffusers import StableDiffusionPipeline

    from .. import tiny

    if variant not in CHANNELS:
        raise ValueError(f"IC-Light variant must be one of {sorted(CHANNELS)}, got {variant!r}")
    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    if base == "tiny":
        pipe, labels = build_pipeline(StableDiffusionPipeline, "tiny", None, dt, tiny.sd_components)
        widen_conv_in(pipe.unet, CHANNELS[variant])
        off = tiny.offsets_like(pipe.unet.state_dict(), seed=7)
    else:
        source, e = resolve_source(base)
        companions = {}
        if e is not None and e.defaults.get("vae"):  # the toy editor shares vae-toy with the toy SEVA
            from diffusers import AutoencoderKL

            companions["vae"] = AutoencoderKL.from_pretrained(weights_location(e.defaults["vae"], paths), torch_dtype=torch.float32)
        pipe, labels = build_pipeline(
            StableDiffusionPipeline, source, e, dt, tiny.sd_components, safety_checker=None, requires_safety_checker=False, **companions
        )
        if e is not None and e.toy:
            labels = [*labels, TOY_LABEL]
        if pipe.unet.config.in_channels == CHANNELS[variant]:
            off = None  # a merged IC-Light UNet (the toy editor, or a converted diffusers copy)
        else:
            widen_conv_in(pipe.unet, CHANNELS[variant])
            from safetensors.torch import load_file

            off = load_file(str(weights_file(offsets or f"ic-light-{variant}", paths)))  # paths[key]: a local offsets file
    if off is not None:
        merge_offsets(pipe.unet, off)
    keep_16bit_vae_safe(pipe, dev)
    pipe.to(dev)
    return ICLight(pipe, dev, dt, labels, variant)
