"""SEVA's image conditioner (CLIP ViT-H/14 via transformers) and autoencoder (SD 2.1 VAE via diffusers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ...registry import MODELS, TOY_LABEL
from ..weights import ModelUnavailable, friendly_hub_errors, weights_location
from .network import SevaConfig, SevaNet
from .preprocess import clip_preprocess

Tensor = torch.Tensor
VAE_SCALE = 0.18215


class SevaVAE:
    """Encode = posterior mean x scale, decode = decode(z / scale); ``chunk`` frames at a time.

    The scale is the VAE config's ``scaling_factor``: 0.18215 for SD 2.1's VAE (what SEVA uses), the
    measured one for the toy VAE."""

    def __init__(self, vae, chunk: int = 1) -> None:
        self.vae, self.chunk = vae, chunk
        self.scale = float(getattr(vae.config, "scaling_factor", VAE_SCALE) or VAE_SCALE)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 4, H/8, W/8) float32."""
        dev = next(self.vae.parameters()).device
        out = [
            self.vae.encode(images[i : i + self.chunk].to(dev, self.dtype)).latent_dist.mean.float() * self.scale
            for i in range(0, len(images), self.chunk)
        ]
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """(N, 4, h, w) -> (N, 3, 8h, 8w) float32, roughly in [-1, 1]."""
        dev = next(self.vae.parameters()).device
        out = [
            self.vae.decode((latents[i : i + self.chunk] / self.scale).to(dev, self.dtype)).sample.float()
            for i in range(0, len(latents), self.chunk)
        ]
        return torch.cat(out)


class ClipConditioner:
    """Projected (not normalised) CLIP image embedding of [-1, 1] images, the reference's preprocessing."""

    def __init__(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        dev = next(self.model.parameters()).device
        size = self.model.config.image_size
        x = clip_preprocess(images.float(), size).to(dev, next(self.model.parameters()).dtype)
        return self.model(pixel_values=x).image_embeds.float()


@dataclass
class SevaModel:
    net: SevaNet
    vae: SevaVAE
    clip: ClipConditioner
    labels: list[str] = field(default_factory=list)
    sources: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def tiny_seva_config() -> SevaConfig:
    """The reference fixtures' small network: every block type, 2.4 M parameters."""
    return SevaConfig(model_channels=32, num_frames=3, channel_mult=[1, 1, 1, 2], num_head_channels=16, context_dim=64)


def tiny_seva(seed: int = 0, device: str | torch.device = "cpu") -> SevaModel:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ..tiny import TINY_LABEL, sd_vae

    torch.manual_seed(seed)
    net = SevaNet(tiny_seva_config()).eval()
    torch.manual_seed(seed + 1)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8, projection_dim=64
        )
    ).eval()
    vae = sd_vae(seed + 2)
    for m in (net, clip, vae):
        m.to(device).requires_grad_(False)
    return SevaModel(net, SevaVAE(vae, chunk=4), ClipConditioner(clip), [TINY_LABEL], {"seva": "tiny", "vae": "tiny", "clip": "tiny"})


def load_seva_model(
    model: str = "seva-1.1",
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    vae: str | None = None,
    clip: str | None = None,
    vae_chunk: int = 1,
    paths: Mapping[str, str] | None = None,
) -> SevaModel:
    """SEVA network + SD 2.1 VAE + CLIP ViT-H/14; ``model="tiny"`` builds random tiny ones offline.

    ``vae``/``clip`` are registry keys (``paths`` may map them to local copies: the VAE folder itself,
    the CLIP folder) or hub ids / local folders; by default the model's registry entry names them
    (the toy SEVA comes with its own), else SD 2.1's VAE and CLIP ViT-H."""
    if model == "tiny":
        return tiny_seva(device=device)
    own = MODELS[model].defaults if model in MODELS else {}
    vae, clip = vae or own.get("vae", "seva-vae"), clip or own.get("clip", "seva-clip")
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from .loader import load_seva

    net = load_seva(model, dtype=dtype, device=device)
    vae_src = weights_location(vae, paths) if vae in MODELS else vae
    clip_src = weights_location(clip, paths) if clip in MODELS else clip
    # the registry's VAE lives in a subfolder of an SD repo; a local copy is the VAE folder itself
    vae_sub = MODELS[vae].subfolder if vae in MODELS and vae not in (paths or {}) else None
    with friendly_hub_errors(vae_src):
        # fp32 VAE: SD VAEs overflow in fp16, and it is small
        ae = AutoencoderKL.from_pretrained(vae_src, subfolder=vae_sub, torch_dtype=torch.float32)
    with friendly_hub_errors(clip_src):
        enc = CLIPVisionModelWithProjection.from_pretrained(clip_src, torch_dtype=dtype or torch.float32)
    if ae.config.latent_channels != 4 or enc.config.projection_dim != net.config.context_dim:
        raise ModelUnavailable(
            f"encoders do not fit the network: VAE latent channels {ae.config.latent_channels} (need 4), "
            f"CLIP projection {enc.config.projection_dim} (need {net.config.context_dim})"
        )
    for m in (ae, enc):
        m.to(device).eval().requires_grad_(False)
    labels = [TOY_LABEL] if model in MODELS and MODELS[model].toy else []
    return SevaModel(net, SevaVAE(ae, vae_chunk), ClipConditioner(enc), labels, {"seva": model, "vae": vae_src, "clip": clip_src})
