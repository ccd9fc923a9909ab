"""What every SD1.5-family editor shares: prompts, the discrete schedule, VAE encode/decode.

The editors (IC-Light, ControlNet) hold a diffusers pipeline for its components only; sampling
is ours (``backend.sampling``), so an editor can run alone or as a coupled participant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...sampling import schedules

Tensor = torch.Tensor


@dataclass
class SDEditor:
    pipe: object  # a diffusers SD1.5 pipeline: unet, vae, text_encoder, tokenizer, scheduler
    device: torch.device
    dtype: torch.dtype
    labels: list[str] = field(default_factory=list)

    @torch.no_grad()
    def encode_prompts(self, prompt: str, negative: str, n: int) -> tuple[Tensor, Tensor]:
        cond, uncond = self.pipe.encode_prompt([prompt] * n, self.device, 1, True, [negative] * n)
        return cond, uncond

    def sigma_table(self) -> Tensor:
        return schedules.sigmas_from_alphas_cumprod(self.pipe.scheduler.alphas_cumprod)

    def schedule(self, steps: int) -> Tensor:
        """The scheduler's own timestep spacing, as descending VE sigmas with a final 0."""
        cfg = self.pipe.scheduler.config
        return schedules.discrete_schedule(self.sigma_table(), steps, cfg.get("timestep_spacing", "leading"), cfg.get("steps_offset", 0))

    def timesteps(self, steps: int) -> Tensor:
        cfg = self.pipe.scheduler.config
        n_train = len(self.pipe.scheduler.alphas_cumprod)
        return schedules.discrete_timesteps(n_train, steps, cfg.get("timestep_spacing", "leading"), cfg.get("steps_offset", 0))

    @property
    def prediction(self) -> str:
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> scaled posterior-mode latents, one image at a time
        (a batch of 21 views at 576² needs ~8 GiB of VAE activations)."""
        vae = self.pipe.vae
        z = torch.cat([vae.encode(images[i : i + 1].to(self.device, vae.dtype)).latent_dist.mode() for i in range(len(images))])
        return (z * vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        return vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float().clamp(-1, 1)


def keep_16bit_vae_safe(pipe, device: torch.device) -> None:
    """SD VAEs overflow in fp16: bf16 on CUDA (as IC-Light's official code does), fp32 elsewhere."""
    pipe.vae.to(torch.bfloat16 if device.type == "cuda" else torch.float32)
