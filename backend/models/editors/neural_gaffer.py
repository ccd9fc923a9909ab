"""Neural Gaffer (research/neuralgaffer.md §1): relight an object image under an environment map.

zero123-xl's UNet with ``conv_in`` widened to 16 inputs and the released Neural Gaffer UNet
weights; VAE and CLIP image encoder from zero123-xl. UNet input per sample:
``[x_t (scaled latent) | image latent | HDR-normalised map latent | LDR map latent]``, the three
condition latents **unscaled** VAE posteriors (samples with a seeded generator, as the official
scripts, or modes). Context: one token, CLIP ``image_embeds`` of the same [-1, 1] 256² image.
Guidance doubles the batch, unconditional half first with zero condition latents and a zero
token. DDIM with eta 0 over the zero123 schedule, whose final step ends at abar_0 (not 1).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...registry import MODELS
from ...sampling import DiscreteDenoiser, Participant, schedules
from ...sampling.denoisers import vp_scale
from ..weights import (
    ModelUnavailable,
    converted_cache,
    friendly_hub_errors,
    load_tensor_pickle,
    pick_device,
    resolve_source,
    save_converted,
    torch_dtype,
    weights_file,
)
from . import guide, guided

Tensor = torch.Tensor
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 256


def widen_conv_in_16(unet) -> None:
    """conv_in 8 -> 16 inputs: zero123's weights in channels 0-7, zeros after, bias kept (§1.1)."""
    old = unet.conv_in
    new = torch.nn.Conv2d(16, old.out_channels, old.kernel_size, old.stride, old.padding, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=16)


def to_model(u8: np.ndarray) -> Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 -> (N, 3, H, W) in [-1, 1]."""
    a = torch.from_numpy(np.ascontiguousarray(u8)).float()
    if a.ndim == 3:
        a = a[None]
    return (a.permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5


@dataclass
class GafferConditions:
    """Per view: the 12 condition channels (image, HDR-normalised map, LDR map latents) and the CLIP token."""

    latents: Tensor  # (N, 12, h, w), unscaled posteriors
    embeds: Tensor  # (N, 1, D)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, idx) -> GafferConditions:
        idx = list(idx) if not isinstance(idx, slice) else idx
        return GafferConditions(self.latents[idx], self.embeds[idx])


@dataclass
class NeuralGaffer:
    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    scheduler: object  # DDIMScheduler (its config and alphas_cumprod)
    device: torch.device
    dtype: torch.dtype
    labels: list[str] = field(default_factory=list)
    latent_kind: str = "sample"  # "sample" (official scripts) or "mode"
    default_negative = ""

    def describe(self) -> dict:
        return {"editor": "neural-gaffer", "condition_latents": self.latent_kind}

    # -- conditions ---------------------------------------------------------------------------
    def clip_pixels(self, x: Tensor) -> Tensor:
        """OpenAI-style CLIP input from the [-1, 1] image: bicubic (align_corners) to 224², then normalise."""
        if x.min() < -1.0 or x.max() > 1.0:
            raise ValueError("CLIP input must lie in [-1, 1]")
        size = self.image_encoder.config.image_size
        y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True, antialias=False)
        y = (y + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=y.device, dtype=y.dtype)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=y.device, dtype=y.dtype)[None, :, None, None]
        return (y - mean) / std

    @torch.no_grad()
    def image_embeds(self, x: Tensor) -> Tensor:
        enc = self.image_encoder
        out = enc(pixel_values=self.clip_pixels(x.float()).to(self.device, enc.dtype)).image_embeds
        return out.float()[:, None]

    @torch.no_grad()
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """VAE posterior mean and std (logvar clamped to [-30, 20]), one image at a time."""
        means, stds = [], []
        for i in range(len(x)):
            dist = self.vae.encode(x[i : i + 1].to(self.device, self.vae.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        return torch.cat(means), torch.cat(stds)

    def conditions(
        self, image: Tensor, hdrn: Tensor, ldr: Tensor, seeds: Sequence[int] | None = None, eps: dict[str, Tensor] | None = None
    ) -> GafferConditions:
        """Images in [-1, 1] (N, 3, 256, 256) -> condition latents + CLIP token.

        Posterior samples draw their noise from one generator per view seeded with ``seeds``
        (image, HDR map, LDR map, in the reference's order) or take it from ``eps``;
        ``latent_kind == "mode"`` uses the means."""
        lat = []
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in (seeds or [0] * len(image))]
        for key, x in (("input_image", image), ("hdr_normalised_map", hdrn), ("ldr_map", ldr)):
            mean, std = self.posterior(x)
            if self.latent_kind == "mode":
                lat.append(mean)
                continue
            if eps is not None:
                noise = eps[key].to(mean)
            else:  # (seed offsets per map would give view i's HDR map the noise of view i+1's image)
                noise = torch.cat([torch.randn((1, *mean.shape[1:]), generator=g) for g in gens]).to(mean)
            lat.append(mean + std * noise)
        return GafferConditions(torch.cat(lat, dim=1), self.image_embeds(image))

    def view_conditions(self, rgba: Sequence[np.ndarray], extras: Sequence[dict]) -> GafferConditions:
        """Multi-view pipeline entry: object crops (alpha from the render) and each view's two maps."""
        from ...pipelines.object_views import on_white

        imgs = to_model(np.stack([on_white(a, SIZE) for a in rgba]))
        hdrn = to_model(np.stack([e["hdrn"] for e in extras]))
        ldr = to_model(np.stack([e["ldr"] for e in extras]))
        seeds = [int(e.get("seed", 0)) for e in extras]
        return self.conditions(imgs, hdrn, ldr, seeds=seeds)

    # -- sampling -----------------------------------------------------------------------------
    def sigma_table(self) -> Tensor:
        return schedules.sigmas_from_alphas_cumprod(self.scheduler.alphas_cumprod)

    def schedule(self, steps: int) -> Tensor:
        """DDIM's sigmas; the last one is abar_0's (set_alpha_to_one False) or 0, as the scheduler ends."""
        cfg = self.scheduler.config
        table = self.sigma_table()
        ts = schedules.discrete_timesteps(len(table), steps, cfg.get("timestep_spacing", "leading"), cfg.get("steps_offset", 0))
        final = 0.0 if cfg.get("set_alpha_to_one", True) else float(table[0])
        return torch.cat([table[ts], torch.tensor([final], dtype=torch.float64)])

    def unet_input(self, x_t: Tensor, conds: GafferConditions, guided: bool) -> tuple[Tensor, Tensor]:
        """(16-channel input, context): with guidance the unconditional half comes first, zero-filled."""
        c = conds.latents.to(x_t)
        e = conds.embeds.to(x_t)
        inp = torch.cat([x_t, c], dim=1)
        if not guided:
            return inp, e
        uncond = torch.cat([x_t, torch.zeros_like(c)], dim=1)
        return torch.cat([uncond, inp]), torch.cat([torch.zeros_like(e), e])

    def denoiser(self, conds: GafferConditions, cfg: float) -> DiscreteDenoiser:
        cfg_on = guided(cfg)

        def eps(x_vp: Tensor, t: Tensor) -> Tensor:
            inp, ctx = self.unet_input(x_vp.float(), conds, cfg_on)
            tt = torch.cat([t, t]) if cfg_on else t
            with torch.no_grad():
                out = self.unet(inp.to(self.dtype), tt, encoder_hidden_states=ctx.to(self.dtype)).sample.float()
            return guide(out, cfg) if cfg_on else out

        return DiscreteDenoiser(eps, self.sigma_table(), self.scheduler.config.get("prediction_type", "epsilon"))

    def participant(
        self, name: str, conds: GafferConditions, prompt: str = "", steps: int = 50, cfg: float = 3.0, seeds=0, negative: str = ""
    ) -> Participant:
        """Per-view Neural Gaffer as a participant (prompt/negative unused: the lighting is the env map)."""
        n, _, h, w = conds.latents.shape
        return Participant(name, self.denoiser(conds, cfg), (n, 4, h, w), sigmas=self.schedule(steps), seeds=seeds, device=self.device)

    def final_latents(self, x: Tensor) -> Tensor:
        """The sampler's VE state at the schedule's end -> the scaled latent DDIM returns."""
        return x * vp_scale(float(self.schedule(1)[-1]))

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        """The sampler's final state -> (N, 3, 256, 256) images in [-1, 1]."""
        z = self.final_latents(x) / self.vae.config.scaling_factor
        return self.vae.decode(z.to(self.device, self.vae.dtype)).sample.float().clamp(-1, 1)


# --- loading -------------------------------------------------------------------------------------


def tiny_neural_gaffer(seed: int = 0, device: str = "cpu") -> NeuralGaffer:
    """Random tiny models in the fixtures' configuration (labelled)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ..tiny import TINY_LABEL

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET).eval()
    vae = AutoencoderKL(**TINY_VAE).eval()
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP)).eval()
    return NeuralGaffer(unet, vae, enc, DDIMScheduler(**ZERO123_SCHEDULER), torch.device(device), torch.float32, [TINY_LABEL])


TINY_UNET = dict(
    sample_size=32, in_channels=16, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)  # fmt: skip
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=256, scaling_factor=0.18215,
)  # fmt: skip
TINY_CLIP = dict(
    hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=224, patch_size=32, projection_dim=32
)
ZERO123_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
    set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon", timestep_spacing="leading",
)  # fmt: skip


def from_single_file(weights: str | Path, config: dict, device: str = "cpu", latent_kind: str = "sample") -> NeuralGaffer:
    """All three networks from one safetensors file with ``unet.``/``vae.``/``image_encoder.`` prefixes
    (diffusers/transformers parameter names) and a config dict with ``unet``, ``vae``,
    ``image_encoder`` and ``scheduler`` sections (``class_name`` entries are ignored)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    def cfg(key: str) -> dict:
        return {k: v for k, v in config[key].items() if k != "class_name"}

    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg("unet"))
        vae = AutoencoderKL(**cfg("vae"))
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg("image_encoder")))
    sd = load_file(str(weights))
    for prefix, net in (("unet.", unet), ("vae.", vae), ("image_encoder.", enc)):
        part = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        missing, unexpected = net.load_state_dict(part, strict=False, assign=True)
        missing = [k for k in missing if "position_ids" not in k]
        if missing or unexpected:
            raise ModelUnavailable(f"{Path(weights).name}: {prefix[:-1]} has {len(missing)} missing and {len(unexpected)} unexpected keys "
                                   f"(first: {(missing + list(unexpected))[:5]})")  # fmt: skip
    for net in (unet, vae, enc):
        for name, buf in list(net.named_buffers()):
            if buf.is_meta:  # non-persistent buffers (CLIP position ids) rebuilt on the CPU
                mod, _, attr = name.rpartition(".")
                owner = net.get_submodule(mod) if mod else net
                owner.register_buffer(attr, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
    dev = torch.device(device)
    nets = [n.to(dev).eval() for n in (unet, vae, enc)]
    return NeuralGaffer(*nets, DDIMScheduler(**cfg("scheduler")), dev, torch.float32, [], latent_kind)


def read_unet_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The trained UNet's tensors from the released zip (an accelerate checkpoint folder inside),
    a checkpoint folder, or a .safetensors/.bin file, without unpickling anything but tensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pick = _pick_member(names)
            if pick is None:
                raise ModelUnavailable(
                    f"{path.name} holds no checkpoint-*/model.safetensors or pytorch_model.bin; is it the Neural Gaffer zip?"
                )
            data = z.read(pick)
        return _tensors_from_bytes(data, pick)
    if path.is_dir():
        pick = _pick_member([p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()])
        if pick is None:
            raise ModelUnavailable(f"no model.safetensors or pytorch_model.bin under {path}")
        return _tensors_from_bytes((path / pick).read_bytes(), pick)
    return _tensors_from_bytes(path.read_bytes(), path.name)


def _pick_member(names: list[str]) -> str | None:
    """The latest checkpoint's first model file (accelerate saves the trained UNet as model 0)."""

    def step(n: str) -> int:
        parts = [p for p in n.split("/") if p.startswith("checkpoint-")]
        return int(parts[-1].split("-")[1]) if parts and parts[-1].split("-")[1].isdigit() else -1

    for fname in ("model.safetensors", "pytorch_model.bin"):
        hits = [n for n in names if n.rsplit("/", 1)[-1] == fname]
        if hits:
            return max(hits, key=step)
    return None


def _tensors_from_bytes(data: bytes, name: str) -> dict[str, Tensor]:
    if name.endswith(".safetensors"):
        from safetensors.torch import load

        sd = load(data)
    else:
        sd = load_tensor_pickle(data, name)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def converted_unet(source: str | Path, cache_dir: str | Path | None = None, log=print) -> Path:
    """Convert the released checkpoint once into the model cache as safetensors; returns its path."""
    out = converted_cache("neural_gaffer", source, cache_dir) / "unet.safetensors"
    if not out.exists():
        log(f"converting {Path(source).name} to safetensors once (tensors only) -> {out}")
        save_converted(read_unet_checkpoint(source), out)
    return out


def load_neural_gaffer(
    source: str = "neural-gaffer", base: str = "zero123-xl", *, dtype: str = "auto", device: str = "auto", latent_kind: str = "sample"
) -> NeuralGaffer:
    """zero123-xl components + the Neural Gaffer UNet. ``source``: registry key (hub zip), a local
    zip / checkpoint folder / .safetensors, or "tiny"."""
    if source == "tiny":
        ng = tiny_neural_gaffer(device=str(pick_device(device)))
        ng.latent_kind = latent_kind
        return ng
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    dev = pick_device(device)
    dt = torch_dtype(dtype, dev)
    base_src, base_entry = resolve_source(base)
    rev = base_entry.revision if base_entry else None
    with friendly_hub_errors(base_src):
        unet = UNet2DConditionModel.from_pretrained(base_src, subfolder="unet", revision=rev)
        vae = AutoencoderKL.from_pretrained(base_src, subfolder="vae", revision=rev)
        enc = CLIPVisionModelWithProjection.from_pretrained(base_src, subfolder="image_encoder", revision=rev)
        sched = DDIMScheduler.from_pretrained(base_src, subfolder="scheduler", revision=rev)
    widen_conv_in_16(unet)
    path = weights_file(source) if source in MODELS else source
    sd = read_unet_checkpoint(converted_unet(path))
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelUnavailable(
            f"Neural Gaffer UNet weights do not fit zero123-xl's UNet: {len(missing)} missing, {len(unexpected)} unexpected "
            f"(first: {(list(missing) + list(unexpected))[:5]})"
        )
    unet, enc = unet.to(dev, dt).eval(), enc.to(dev, dt).eval()
    vae = vae.to(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32).eval()  # SD VAEs overflow in fp16
    return NeuralGaffer(unet, vae, enc, sched, dev, dt, [], latent_kind)
