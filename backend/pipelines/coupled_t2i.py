"""Coupled text-to-image: N prompts of one model, sampled jointly so they come out aligned.

(paper §3.) All prompts form one participant of N items, batched through one network call per
step; couplings tie item pairs (all pairs, or a chain 0-1-2...). Components come from diffusers
pipelines; only the denoising loop is ours (``backend.sampling``), so lam = 0 reproduces the
stock pipeline for the same seeds.

- Flux (flow matching): FluxTransformer2DModel, packed latents, position ids, dynamic shift mu,
  guidance embedding (dev), optional true CFG with a negative prompt.
- SD family (eps / v prediction): any diffusers StableDiffusionPipeline checkpoint, own CFG.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from ..models import tiny
from ..models.weights import ModelUnavailable, apply_memory_options, build_pipeline, pick_device, resolve_source, torch_dtype
from ..sampling import Coupling, DiscreteDenoiser, FlowDenoiser, Participant, StepInfo, sample_coupled, schedules

Tensor = torch.Tensor


@dataclass
class ImageRequest:
    prompts: list[str]
    lam: float = 0.3
    seeds: list[int] | None = None  # default: 0, 1, 2, ...
    steps: int | None = None  # model default when None
    width: int | None = None
    height: int | None = None
    guidance: float | None = None  # Flux dev: distilled guidance; SD: CFG scale
    negative_prompt: str = ""
    true_cfg: float = 1.0  # Flux only: real CFG with the negative prompt when > 1
    chain: bool = False
    step: str = "euler"
    alignment: str = "step"
    max_pull: float | None = 0.5

    def seeds_or_default(self) -> list[int]:
        seeds = self.seeds or list(range(len(self.prompts)))
        if len(seeds) != len(self.prompts):
            raise ValueError(f"give one seed per prompt: {len(self.prompts)} prompts, {len(seeds)} seeds")
        return seeds


@dataclass
class CoupledImages:
    images: list[Image.Image]
    latents: Tensor  # final latents, (N, ...) in the model's sampling layout
    metadata: dict = field(default_factory=dict)


def pair_couplings(name: str, n: int, lam: float, chain: bool) -> list[Coupling]:
    pairs = [(i, i + 1) for i in range(n - 1)] if chain else list(itertools.combinations(range(n), 2))
    return [Coupling(name, name, lam, items_a=[i], items_b=[j]) for i, j in pairs]


def pairwise_rms(latents: Tensor) -> dict[str, float]:
    """RMS distance between every two samples' final latents: how aligned the coupling made them."""
    n = latents.shape[0]
    return {f"{i}-{j}": float((latents[i] - latents[j]).float().pow(2).mean().sqrt()) for i, j in itertools.combinations(range(n), 2)}


def flux_velocity(transformer, dtype, embeds, pooled, text_ids, img_ids, guidance=None, negative=None, true_cfg=1.0):
    """``v(x_fm, s)`` of a FluxTransformer2DModel for packed latents; true CFG when ``negative`` is given.

    Flux takes the flow time s in [0, 1] (the pipeline's t / 1000); states stay float32 and
    are cast to the transformer's dtype only for the call.
    """

    def call(x, s, e, p):
        return transformer(
            hidden_states=x.to(dtype),
            timestep=s.to(dtype),
            guidance=guidance,
            pooled_projections=p,
            encoder_hidden_states=e,
            txt_ids=text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0].float()

    def velocity(x_fm: Tensor, s: Tensor) -> Tensor:
        with torch.no_grad():
            v = call(x_fm, s, embeds, pooled)
            if negative is not None:
                v_neg = call(x_fm, s, negative[0], negative[1])
                v = v_neg + true_cfg * (v - v_neg)
        return v

    return velocity


class T2IModel:
    """A loaded text-to-image model that can build one participant for a list of prompts."""

    family = ""

    def __init__(self, pipe, key: str, source: str, labels: list[str], device: torch.device, dtype: torch.dtype) -> None:
        self.pipe, self.key, self.source, self.labels = pipe, key, source, labels
        self.device, self.dtype = device, dtype
        self.defaults: dict = {}

    def participant(self, req: ImageRequest) -> tuple[Participant, Callable[[Tensor], list[Image.Image]], dict]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "model": self.key,
            "source": self.source,
            "family": self.family,
            "dtype": str(self.dtype).removeprefix("torch."),
            "labels": self.labels,
        }


class FluxModel(T2IModel):
    family = "flux"

    def participant(self, req: ImageRequest):
        pipe = self.pipe
        n = len(req.prompts)
        steps = req.steps or self.defaults.get("steps", 28)
        size = self.defaults.get("size", 1024)
        height, width = req.height or size, req.width or size
        multiple = pipe.vae_scale_factor * 2
        if height % multiple or width % multiple:
            raise ValueError(f"Flux needs width and height divisible by {multiple}, got {width}x{height}")
        max_seq = self.defaults.get("max_sequence_length", 512)
        with torch.no_grad():
            embeds, pooled, text_ids = pipe.encode_prompt(
                prompt=req.prompts, prompt_2=None, device=self.device, max_sequence_length=max_seq
            )
            neg = None
            if req.true_cfg > 1.0:
                neg = pipe.encode_prompt(prompt=[req.negative_prompt] * n, prompt_2=None, device=self.device, max_sequence_length=max_seq)
        c = pipe.transformer.config.in_channels // 4
        h, w = 2 * (height // multiple), 2 * (width // multiple)
        img_ids = pipe._prepare_latent_image_ids(n, h // 2, w // 2, self.device, self.dtype)
        seq_len = (h // 2) * (w // 2)
        sched = pipe.scheduler
        mu = schedules.flux_mu(
            seq_len,
            sched.config.get("base_image_seq_len", 256),
            sched.config.get("max_image_seq_len", 4096),
            sched.config.get("base_shift", 0.5),
            sched.config.get("max_shift", 1.15),
        )
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=mu, device="cpu")
        sigmas = schedules.flow_sigmas_to_ve(sched.sigmas.cpu())
        guidance = req.guidance if req.guidance is not None else self.defaults.get("guidance")
        g = (
            torch.full((n,), float(guidance or 0.0), device=self.device, dtype=torch.float32)
            if pipe.transformer.config.guidance_embeds
            else None
        )
        velocity = flux_velocity(pipe.transformer, self.dtype, embeds, pooled, text_ids, img_ids, g, neg, req.true_cfg)

        def pack(raw: Tensor) -> Tensor:
            return pipe._pack_latents(raw, n, c, h, w)

        def decode(latents: Tensor) -> list[Image.Image]:
            with torch.no_grad():
                z = pipe._unpack_latents(latents.to(self.dtype), height, width, pipe.vae_scale_factor)
                z = z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
                image = pipe.vae.decode(z.to(pipe.vae.dtype), return_dict=False)[0]
            return pipe.image_processor.postprocess(image, output_type="pil")

        p = Participant(
            "images",
            FlowDenoiser(velocity),
            (n, seq_len, 4 * c),
            sigmas=sigmas,
            seeds=req.seeds_or_default(),
            device=self.device,
            noise_shape=(n, c, h, w),
            noise_transform=pack,
        )
        meta = {"width": width, "height": height, "steps": steps, "mu": mu, "guidance": guidance, "true_cfg": req.true_cfg}
        return p, decode, meta


class SDModel(T2IModel):
    family = "sd"

    def participant(self, req: ImageRequest):
        pipe = self.pipe
        n = len(req.prompts)
        steps = req.steps or self.defaults.get("steps", 30)
        size = self.defaults.get("size", 512)
        height, width = req.height or size, req.width or size
        f = pipe.vae_scale_factor
        if height % f or width % f:
            raise ValueError(f"width and height must be divisible by {f}, got {width}x{height}")
        cfg = req.guidance if req.guidance is not None else self.defaults.get("guidance", 7.5)
        use_cfg = cfg > 1.0
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(req.prompts, self.device, 1, use_cfg, [req.negative_prompt] * n if use_cfg else None)
        ctx = torch.cat([uncond, cond]) if use_cfg else cond
        sched = pipe.scheduler
        table = schedules.sigmas_from_alphas_cumprod(sched.alphas_cumprod)
        sigmas = schedules.discrete_schedule(
            table, steps, sched.config.get("timestep_spacing", "leading"), sched.config.get("steps_offset", 0)
        )
        unet = pipe.unet

        def predict(x_vp: Tensor, t: Tensor) -> Tensor:
            with torch.no_grad():
                if not use_cfg:
                    return unet(x_vp.to(self.dtype), t, encoder_hidden_states=ctx).sample.float()
                out = unet(torch.cat([x_vp, x_vp]).to(self.dtype), torch.cat([t, t]), encoder_hidden_states=ctx).sample.float()
                u, c = out.chunk(2)
                return u + cfg * (c - u)

        def decode(latents: Tensor) -> list[Image.Image]:
            with torch.no_grad():
                image = pipe.vae.decode((latents / pipe.vae.config.scaling_factor).to(pipe.vae.dtype), return_dict=False)[0]
            return pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True] * n)

        prediction = sched.config.get("prediction_type", "epsilon")
        c = unet.config.in_channels
        p = Participant(
            "images",
            DiscreteDenoiser(predict, table, prediction),
            (n, c, height // f, width // f),
            sigmas=sigmas,
            seeds=req.seeds_or_default(),
            device=self.device,
        )
        return p, decode, {"width": width, "height": height, "steps": steps, "cfg": cfg, "prediction": prediction}


def load_t2i(
    model: str = "flux-schnell",
    *,
    source: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    offload: str = "none",
    vae_tiling: bool = False,
) -> T2IModel:
    """Load a registry key (``flux-schnell``, ``flux-dev``, ``sd15``, ``flux-tiny``...), local folder or repo id."""
    from diffusers import FluxPipeline, StableDiffusionPipeline

    source, e = resolve_source(model, source)
    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    family = e.kind if e else ("flux" if "flux" in source.lower() else "sd")
    if family not in ("flux", "sd"):
        raise ModelUnavailable(f"{model!r} is a {family} model, not a text-to-image model")
    if family == "flux":
        pipe, labels = build_pipeline(
            FluxPipeline, source, e, dt, lambda: tiny.flux_components(guidance_embeds=bool(e.defaults.get("guidance")))
        )
    else:
        pipe, labels = build_pipeline(
            StableDiffusionPipeline, source, e, dt, tiny.sd_components, safety_checker=None, requires_safety_checker=False
        )
    exec_device = apply_memory_options(pipe, dev, offload, vae_tiling)
    out = (FluxModel if family == "flux" else SDModel)(pipe, model, source, labels, exec_device, dt)
    out.defaults = dict(e.defaults) if e else {}
    pipe.set_progress_bar_config(disable=True)
    return out


def couple_images(
    model: T2IModel,
    req: ImageRequest,
    callback: Callable[[StepInfo], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CoupledImages:
    if len(req.prompts) < 1:
        raise ValueError("give at least one prompt")
    t0 = time.perf_counter()
    p, decode, meta = model.participant(req)
    couplings = pair_couplings(p.name, len(req.prompts), req.lam, req.chain) if len(req.prompts) > 1 else []
    t1 = time.perf_counter()
    out = sample_coupled(
        [p], couplings, step=req.step, alignment=req.alignment, max_pull=req.max_pull, callback=callback, should_cancel=should_cancel
    )
    t2 = time.perf_counter()
    latents = out.latents[p.name]
    images = decode(latents)
    t3 = time.perf_counter()
    metadata = {
        **model.describe(),
        **meta,
        "request": asdict(req) | {"seeds": req.seeds_or_default()},
        "couplings": [(c.items_a[0], c.items_b[0]) for c in couplings],
        "timings_s": {"prepare": t1 - t0, "sample": t2 - t1, "decode": t3 - t2},
        "latent_rms_distance": pairwise_rms(latents),
    }
    return CoupledImages(images, latents, metadata)
