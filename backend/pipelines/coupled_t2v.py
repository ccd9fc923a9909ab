"""Coupled text-to-video with Wan 2.1: prompts sampled jointly so the videos stay aligned.

Components come from diffusers' ``WanPipeline`` (WanTransformer3DModel, AutoencoderKLWan with
per-channel latent mean/std, UMT5 text encoder); the loop is ``backend.sampling``. The sampler
is flow-matching Euler on the schedule ``FlowMatchEulerDiscreteScheduler(shift=flow_shift)``
builds: the published repos ship UniPC, a multistep solver whose history does not fit a
per-step coupling, so lam = 0 reproduces ``WanPipeline`` run with that Euler scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..models import tiny
from ..models.weights import (
    ModelUnavailable,
    apply_memory_options,
    build_pipeline,
    friendly_hub_errors,
    pick_device,
    resolve_source,
    torch_dtype,
)
from ..sampling import FlowDenoiser, Participant, StepInfo, sample_coupled, schedules
from .coupled_t2i import pair_couplings, pairwise_rms

Tensor = torch.Tensor


@dataclass
class VideoRequest:
    prompts: list[str]
    lam: float = 0.3
    seeds: list[int] | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None  # 4k + 1
    guidance: float | None = None
    negative_prompt: str = ""
    flow_shift: float | None = None
    chain: bool = False
    step: str = "euler"
    max_pull: float | None = 0.5


@dataclass
class CoupledVideos:
    videos: np.ndarray  # (N, F, H, W, 3) float in [0, 1]
    latents: Tensor
    metadata: dict = field(default_factory=dict)


def wan_latent_stats(vae, device, dtype) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of Wan's latent space, shaped to broadcast over (B, C, F, H, W)."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float64).view(shape).to(device, dtype)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float64).view(shape).to(device, dtype)
    return mean, std


def wan_normalize(z: Tensor, vae) -> Tensor:
    """VAE latent -> the unit-scale space the transformer samples in."""
    mean, std = wan_latent_stats(vae, z.device, z.dtype)
    return (z - mean) / std


def wan_denormalize(latents: Tensor, vae) -> Tensor:
    """Inverse of :func:`wan_normalize`, written as WanPipeline writes it before decoding."""
    mean, std = wan_latent_stats(vae, latents.device, latents.dtype)
    return latents / (1.0 / std) + mean


class WanModel:
    family = "wan"

    def __init__(self, pipe, key: str, source: str, labels: list[str], device: torch.device, dtype: torch.dtype, defaults: dict) -> None:
        self.pipe, self.key, self.source, self.labels = pipe, key, source, labels
        self.device, self.dtype, self.defaults = device, dtype, defaults

    def describe(self) -> dict:
        return {
            "model": self.key,
            "source": self.source,
            "family": self.family,
            "dtype": str(self.dtype).removeprefix("torch."),
            "labels": self.labels,
        }

    def euler_scheduler(self, flow_shift: float):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(shift=flow_shift)

    def participant(self, req: VideoRequest):
        pipe = self.pipe
        n = len(req.prompts)
        d = self.defaults
        steps = req.steps or d.get("steps", 50)
        height, width, frames = req.height or d.get("height", 480), req.width or d.get("width", 832), req.frames or d.get("frames", 81)
        sf_s, sf_t = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        if height % (sf_s * 2) or width % (sf_s * 2):
            raise ValueError(f"Wan needs width and height divisible by {sf_s * 2}, got {width}x{height}")
        if (frames - 1) % sf_t:
            raise ValueError(f"Wan needs {sf_t}k+1 frames, got {frames}")
        cfg = req.guidance if req.guidance is not None else d.get("guidance", 5.0)
        use_cfg = cfg > 1.0
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(
                req.prompts,
                [req.negative_prompt] * n if use_cfg else None,
                do_classifier_free_guidance=use_cfg,
                max_sequence_length=d.get("max_sequence_length", 512),
                device=self.device,
            )
        cond = cond.to(self.dtype)
        uncond = uncond.to(self.dtype) if uncond is not None else None
        flow_shift = req.flow_shift or d.get("flow_shift", 3.0)
        sched = self.euler_scheduler(flow_shift)
        sched.set_timesteps(steps, device="cpu")
        sigmas = schedules.flow_sigmas_to_ve(sched.sigmas.cpu())
        c = pipe.transformer.config.in_channels
        shape = (n, c, (frames - 1) // sf_t + 1, height // sf_s, width // sf_s)
        transformer = pipe.transformer

        def velocity(x_fm: Tensor, s: Tensor) -> Tensor:
            t = (s * 1000.0).to(torch.float32)
            x = x_fm.to(self.dtype)
            with torch.no_grad():
                v = transformer(hidden_states=x, timestep=t, encoder_hidden_states=cond, return_dict=False)[0].float()
                if use_cfg:
                    vu = transformer(hidden_states=x, timestep=t, encoder_hidden_states=uncond, return_dict=False)[0].float()
                    v = vu + cfg * (v - vu)
            return v

        def decode(latents: Tensor) -> np.ndarray:
            vae = pipe.vae
            with torch.no_grad():
                z = wan_denormalize(latents.to(vae.dtype), vae)
                video = vae.decode(z, return_dict=False)[0]
            return pipe.video_processor.postprocess_video(video, output_type="np")

        p = Participant("videos", FlowDenoiser(velocity), shape, sigmas=sigmas, seeds=req.seeds or list(range(n)), device=self.device)
        meta = {
            "width": width,
            "height": height,
            "frames": frames,
            "steps": steps,
            "cfg": cfg,
            "flow_shift": flow_shift,
            "sampler": "flow-match Euler",
        }
        return p, decode, meta


def load_t2v(
    model: str = "wan-1.3b",
    *,
    source: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    offload: str = "none",
    vae_tiling: bool = False,
) -> WanModel:
    from diffusers import WanPipeline

    source, e = resolve_source(model, source)
    if e is not None and e.kind != "wan":
        raise ModelUnavailable(f"{model!r} is a {e.kind} model, not a Wan text-to-video model")
    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    kwargs = {}
    if source != "tiny":
        from diffusers import AutoencoderKLWan

        with friendly_hub_errors(source):  # Wan's VAE stays float32, as the model card advises
            kwargs["vae"] = AutoencoderKLWan.from_pretrained(
                source, subfolder="vae", torch_dtype=torch.float32, revision=e.revision if e else None
            )
    pipe, labels = build_pipeline(WanPipeline, source, e, dt, tiny.wan_components, **kwargs)
    exec_device = apply_memory_options(pipe, dev, offload, vae_tiling)
    pipe.set_progress_bar_config(disable=True)
    return WanModel(pipe, model, source, labels, exec_device, dt, dict(e.defaults) if e else {})


def couple_videos(
    model: WanModel,
    req: VideoRequest,
    callback: Callable[[StepInfo], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CoupledVideos:
    t0 = time.perf_counter()
    p, decode, meta = model.participant(req)
    couplings = pair_couplings(p.name, len(req.prompts), req.lam, req.chain) if len(req.prompts) > 1 else []
    t1 = time.perf_counter()
    out = sample_coupled([p], couplings, step=req.step, max_pull=req.max_pull, callback=callback, should_cancel=should_cancel)
    t2 = time.perf_counter()
    latents = out.latents[p.name]
    videos = decode(latents)
    t3 = time.perf_counter()
    metadata = {
        **model.describe(),
        **meta,
        "request": asdict(req) | {"seeds": req.seeds or list(range(len(req.prompts)))},
        "timings_s": {"prepare": t1 - t0, "sample": t2 - t1, "decode": t3 - t2},
        "latent_rms_distance": pairwise_rms(latents),
    }
    return CoupledVideos(np.asarray(videos), latents, metadata)
