"""Magic Fixup (research/magicfixup.md): a coarse edit + the original photo -> a realistic edit.

Two diffusers ``UNet2DConditionModel``s of one layout: the **detail extractor** sees the
reference photo's latent (noised to the current t with fresh noise, plus the clean latent and
the edit's mask) and hands, per transformer, its LayerNorm-1 output to the **synthesizer**, whose
``attn3`` (hosted in diffusers' ``attn2`` slot, with the block width as cross-attention width)
attends to those tokens; the synthesizer sees ``[x_t | hole-filled edit latent | mask]`` and
predicts eps. No text, no DINO, no guidance (all dead in the reference). DDIM with eta 1 from the
forward-noised edit latent, over the schedule **read from the checkpoint** (§7).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...sampling import DiscreteDenoiser, Participant, schedules
from ..weights import ModelUnavailable

Tensor = torch.Tensor
SCALE = 0.18215
SCHEDULE_KEYS = ("alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")  # read from the checkpoint, never recomputed


# --- configuration and key mapping (LDM -> diffusers) ------------------------------------------


def unet_config(ldm: dict) -> dict:
    """diffusers UNet2DConditionModel kwargs from the reference's ``unet_config`` (§11.1)."""
    mults, c = ldm["channel_mult"], ldm["model_channels"]
    attn = attention_levels(ldm)
    widths = tuple(c * m for m in mults)
    n = len(mults)
    return dict(
        sample_size=ldm.get("image_size", 64), in_channels=ldm["in_channels"], out_channels=ldm["out_channels"],
        flip_sin_to_cos=True, freq_shift=0, block_out_channels=widths, layers_per_block=ldm["num_res_blocks"],
        down_block_types=tuple("CrossAttnDownBlock2D" if k in attn else "DownBlock2D" for k in range(n)),
        up_block_types=tuple("CrossAttnUpBlock2D" if (n - 1 - u) in attn else "UpBlock2D" for u in range(n)),
        attention_head_dim=ldm["num_heads"], norm_num_groups=32, norm_eps=1e-5, use_linear_projection=False,
        cross_attention_dim=widths,  # attn3 is C -> C: the block width is its "cross-attention" width
    )  # fmt: skip


def attention_levels(ldm: dict) -> set[int]:
    """Levels whose downsampling factor is listed in attention_resolutions."""
    return {k for k in range(len(ldm["channel_mult"])) if 2**k in ldm["attention_resolutions"]}


_RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
        "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}  # fmt: skip


def _module_map(ldm: dict) -> dict[str, str]:
    """LDM module prefix -> diffusers module prefix for one UNet."""
    n, R, attn = len(ldm["channel_mult"]), ldm["num_res_blocks"], attention_levels(ldm)
    m = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2", "input_blocks.0.0": "conv_in",
         "out.0": "conv_norm_out", "out.2": "conv_out", "middle_block.0": "mid_block.resnets.0",
         "middle_block.1": "mid_block.attentions.0", "middle_block.2": "mid_block.resnets.1"}  # fmt: skip
    for k in range(n):
        for j in range(R):
            i = 1 + k * (R + 1) + j
            m[f"input_blocks.{i}.0"] = f"down_blocks.{k}.resnets.{j}"
            if k in attn:
                m[f"input_blocks.{i}.1"] = f"down_blocks.{k}.attentions.{j}"
        if k < n - 1:
            m[f"input_blocks.{1 + k * (R + 1) + R}.0.op"] = f"down_blocks.{k}.downsamplers.0.conv"
    for u in range(n):
        level_attn = (n - 1 - u) in attn
        for i in range(R + 1):
            o = u * (R + 1) + i
            m[f"output_blocks.{o}.0"] = f"up_blocks.{u}.resnets.{i}"
            if level_attn:
                m[f"output_blocks.{o}.1"] = f"up_blocks.{u}.attentions.{i}"
        if u < n - 1:
            m[f"output_blocks.{u * (R + 1) + R}.{2 if level_attn else 1}.conv"] = f"up_blocks.{u}.upsamplers.0.conv"
    return m


def convert_unet(sd: dict[str, Tensor], prefix: str, ldm: dict, role: str) -> dict[str, Tensor]:
    """One UNet's tensors under ``prefix`` in diffusers names. ``role``: "synth" (attn3 -> attn2,
    MF's attn2 dropped) or "detail" (attn2, attn3, norm2 dropped). merge_attentions* always dropped."""
    mods = sorted(_module_map(ldm).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix) :]
        if "merge_attentions" in k or ".attn2." in k:
            continue
        if role == "detail" and (".attn3." in k or ".norm2." in k and "transformer_blocks" in k):
            continue
        k = k.replace(".attn3.", ".attn2.")
        for src, dst in mods:
            if k == src or k.startswith(src + "."):
                rest = k[len(src) :]
                if ".resnets." in dst:
                    for a, b in _RES.items():
                        if rest.startswith("." + a + "."):
                            rest = "." + b + rest[len(a) + 1 :]
                            break
                k = dst + rest
                break
        else:
            raise ModelUnavailable(f"unexpected Magic Fixup UNet key {key!r}")
        out[k] = value
    return out


def convert_vae(sd: dict[str, Tensor], prefix: str = "first_stage_model.") -> dict[str, Tensor]:
    """The LDM kl-f8 first stage in diffusers AutoencoderKL names."""
    ups = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"decoder\.up\.(\d+)\.", k))}
    n_up = max(ups) + 1 if ups else 0
    out = {}
    for key, v in sd.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix) :]
        k = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", k)
        k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.conv\.", r"encoder.down_blocks.\1.downsamplers.0.conv.", k)
        k = re.sub(
            r"^decoder\.up\.(\d+)\.block\.(\d+)\.", lambda m: f"decoder.up_blocks.{n_up - 1 - int(m.group(1))}.resnets.{m.group(2)}.", k
        )
        k = re.sub(
            r"^decoder\.up\.(\d+)\.upsample\.conv\.", lambda m: f"decoder.up_blocks.{n_up - 1 - int(m.group(1))}.upsamplers.0.conv.", k
        )
        k = re.sub(r"^(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}.", k)
        k = re.sub(r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0.", k)
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", k)
        k = k.replace(".nin_shortcut.", ".conv_shortcut.")
        if ".mid_block.attentions.0." in k:
            k = k.replace(".norm.", ".group_norm.").replace(".q.", ".to_q.").replace(".k.", ".to_k.").replace(".v.", ".to_v.")
            k = k.replace(".proj_out.", ".to_out.0.")
            if k.endswith("weight") and v.ndim == 4 and "group_norm" not in k:
                v = v[:, :, 0, 0]  # 1x1 convs -> linear
        out[k] = v
    return out


def vae_config(ddconfig: dict, embed_dim: int = 4) -> dict:
    n = len(ddconfig["ch_mult"])
    return dict(
        in_channels=ddconfig["in_channels"], out_channels=ddconfig["out_ch"], latent_channels=embed_dim,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(ddconfig["ch"] * m for m in ddconfig["ch_mult"]), layers_per_block=ddconfig["num_res_blocks"],
        norm_num_groups=32, sample_size=ddconfig.get("resolution", 512), scaling_factor=SCALE,
    )  # fmt: skip


# --- reference attention (attn3) through attention processors ---------------------------------


def _attend(attn, x: Tensor, ctx: Tensor) -> Tensor:
    q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
    B, N, C = q.shape
    h = attn.heads

    def split(t: Tensor) -> Tensor:
        return t.view(B, -1, h, C // h).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    out = out.transpose(1, 2).reshape(B, N, C)
    return attn.to_out[1](attn.to_out[0](out))


class RecordingSelfAttention:
    """Detail extractor's attn1: keep its input (the LayerNorm-1 output) for the synthesizer, then attend."""

    def __init__(self, bank: dict, key: str) -> None:
        self.bank, self.key = bank, key

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.bank[self.key] = hidden_states
        return _attend(attn, hidden_states, hidden_states)


class ReferenceAttention:
    """Synthesizer's attn3 (in the attn2 slot): queries from norm2, keys/values from the detail tokens."""

    def __init__(self, bank: dict, key: str) -> None:
        self.bank, self.key = bank, key

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return _attend(attn, hidden_states, self.bank[self.key])


def _transformer_path(processor_name: str) -> str:
    return processor_name.split(".transformer_blocks.")[0]


def drop_cross_attention(detail) -> None:
    """The detail extractor never runs attn2 / attn3: without them diffusers skips that branch."""
    for block in [m for m in detail.modules() if type(m).__name__ == "BasicTransformerBlock"]:
        block.attn2, block.norm2 = None, None


def wire(synth, detail) -> dict:
    """Install the processors; returns the feature bank (cleared per call)."""
    bank: dict[str, Tensor] = {}
    drop_cross_attention(detail)
    detail.set_attn_processor({n: RecordingSelfAttention(bank, _transformer_path(n)) for n in detail.attn_processors})
    procs = {}
    for n in synth.attn_processors:  # attn1: plain self-attention (records into a scratch bank); attn2 = MF's attn3
        procs[n] = ReferenceAttention(bank, _transformer_path(n)) if n.endswith("attn2.processor") else RecordingSelfAttention({}, "")
    synth.set_attn_processor(procs)
    return bank


# --- the model ------------------------------------------------------------------------------------


@dataclass
class FixupConditions:
    """Per view: the hole-filled coarse edit's latent, the original's latent, the latent mask, a seed."""

    z_inpaint: Tensor
    z_ref: Tensor
    mask: Tensor
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.z_ref)

    def __getitem__(self, idx) -> FixupConditions:
        idx = list(idx) if not isinstance(idx, slice) else idx
        seeds = [self.seeds[i] for i in idx] if isinstance(idx, list) else self.seeds[idx]
        return FixupConditions(self.z_inpaint[idx], self.z_ref[idx], self.mask[idx], seeds)


@dataclass
class MagicFixup:
    synth: torch.nn.Module
    detail: torch.nn.Module
    vae: torch.nn.Module
    alphas_cumprod: Tensor  # (1000,) float32, from the checkpoint
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    labels: list[str] = field(default_factory=list)
    bank: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bank = wire(self.synth, self.detail)

    @property
    def schedule_kind(self) -> str:
        """Which schedule the checkpoint carries (§7): plain SD, or zero terminal SNR."""
        return "zero-terminal-snr" if float(self.alphas_cumprod[-1]) == 0.0 else "sd"

    def detail_input(self, z_ref: Tensor, t: Tensor, mask: Tensor, noise: Tensor) -> Tensor:
        a = self.sqrt_alphas_cumprod.to(z_ref.device)[t].view(-1, 1, 1, 1)
        b = self.sqrt_one_minus_alphas_cumprod.to(z_ref.device)[t].view(-1, 1, 1, 1)
        return torch.cat([a * z_ref + b * noise, z_ref, mask], dim=1)

    @torch.no_grad()
    def eps(self, x9: Tensor, t: Tensor, z_ref: Tensor, ref_noise: Tensor) -> Tensor:
        """One denoiser call: the detail extractor, then the synthesizer attending to its tokens."""
        self.bank.clear()
        ctx = torch.zeros(x9.shape[0], 1, self.synth.config.cross_attention_dim[0], device=x9.device, dtype=self.dtype)
        d_in = self.detail_input(z_ref, t, x9[:, 8:9], ref_noise)
        self.detail(d_in.to(self.dtype), t, encoder_hidden_states=ctx)
        out = self.synth(x9.to(self.dtype), t, encoder_hidden_states=ctx).sample.float()
        self.bank.clear()
        return out

    def sigma_table(self) -> Tensor:
        return schedules.sigmas_from_alphas_cumprod(self.alphas_cumprod.double())

    def schedule(self, steps: int = 50) -> Tensor:
        """981, 961, ..., 1 (uniform, offset 1), ending at abar[0] as the reference's DDIM does."""
        table = self.sigma_table()
        ts = schedules.discrete_timesteps(len(table), steps, "leading", 1)
        return torch.cat([table[ts], table[:1]])

    def denoiser(self, z_inpaint: Tensor, z_ref: Tensor, mask: Tensor, ref_noise: Callable[[Tensor], Tensor]) -> DiscreteDenoiser:
        def eps(x_vp: Tensor, t: Tensor) -> Tensor:
            x9 = torch.cat([x_vp, z_inpaint.to(x_vp), mask.to(x_vp)], dim=1)
            return self.eps(x9, t, z_ref.to(x_vp), ref_noise(z_ref))

        return DiscreteDenoiser(eps, self.sigma_table(), "epsilon")

    def fixup_participant(
        self, name: str, z_inpaint: Tensor, z_ref: Tensor, mask: Tensor, steps: int = 50, seeds: Sequence[int] | int = 0
    ) -> Participant:
        """Per-view Magic Fixup: starts from the edit latent noised to t = 981 (``init``); the detail
        extractor's fresh reference noise comes from its own per-item generators (part of the participant)."""
        gens = [torch.Generator("cpu").manual_seed(int(s) + 7919) for s in ([seeds] * len(z_ref) if isinstance(seeds, int) else seeds)]

        def ref_noise(z: Tensor) -> Tensor:
            return torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)

        den = self.denoiser(z_inpaint, z_ref, mask, ref_noise)
        return Participant(name, den, tuple(z_inpaint.shape), sigmas=self.schedule(steps), seeds=seeds, device=self.device, init=z_inpaint)

    # -- the editor interface of the multi-view pipeline ------------------------------------------
    default_negative = ""

    def describe(self) -> dict:
        return {"editor": "magic-fixup", "schedule": self.schedule_kind, "size": self.size}

    @property
    def size(self) -> int:
        """The working size: 512 (trained there only); the tiny random model works at 64."""
        return SIZE if self.vae.config.sample_size >= SIZE else 64

    def view_conditions(self, rgba, extras) -> FixupConditions:
        """Each view's original (rgba) and coarse edit (``extras["edit"]``, RGBA, alpha 0 = hole) -> latents."""
        import numpy as np

        zi, zr, ms, seeds = [], [], [], []
        for i, (orig, ex) in enumerate(zip(rgba, extras, strict=True)):
            if "edit" not in ex:
                raise ValueError(f"view {i} has no coarse edit; a spatial edit needs every view warped by the object moves")
            inp = prepare(np.clip(ex["edit"], 0, 255).astype(np.uint8), np.clip(orig[..., :3], 0, 255).astype(np.uint8), self.size)
            seed = int(ex.get("seed", i))
            g = torch.Generator("cpu").manual_seed(seed)  # posterior samples, as the reference takes them
            zi.append(self.encode(inp.inpaint_image, generator=g))
            zr.append(self.encode(inp.ref_image, generator=g))
            ms.append(mask_latent(inp.alpha, zi[-1].shape[-1]))
            seeds.append(seed)
        return FixupConditions(torch.cat(zi), torch.cat(zr), torch.cat(ms), seeds)

    def participant(self, name: str, conds, prompt: str = "", steps: int = 50, cfg: float = 1.0, seeds=0, negative: str = ""):
        """The pipeline's signature (prompt, guidance unused: Magic Fixup has neither)."""
        return self.fixup_participant(name, conds.z_inpaint, conds.z_ref, conds.mask, steps, seeds)

    def to(self, device) -> MagicFixup:
        self.device = torch.device(device)
        self.synth, self.detail, self.vae = self.synth.to(self.device), self.detail.to(self.device), self.vae.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, images: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """[-1, 1] images -> scaled posterior **samples** (the reference's get_first_stage_encoding)."""
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        eps = noise if noise is not None else torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
        return ((dist.mean + dist.std * eps.to(dist.mean)) * SCALE).float()

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        """The sampler's final state (VE, at abar[0]) -> images in [-1, 1]."""
        from ...sampling.denoisers import vp_scale

        z = x * vp_scale(float(self.schedule(1)[-1])) / SCALE
        return self.vae.decode(z.to(self.device, self.vae.dtype)).sample.float().clamp(-1, 1)


def from_state_dict(
    sd: dict[str, Tensor], ldm_unet: dict, ddconfig: dict, embed_dim: int = 4, device: str = "cpu", dtype=torch.float32
) -> MagicFixup:
    """Build both UNets and the VAE from a reference state dict (the release's key names)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = unet_config(ldm_unet)
    with torch.device("meta"):
        synth, detail = UNet2DConditionModel(**cfg), UNet2DConditionModel(**cfg)
        vae = AutoencoderKL(**vae_config(ddconfig, embed_dim))
    for net, prefix, role in ((synth, "model.diffusion_model.", "synth"), (detail, "model.reference_model.", "detail")):
        if role == "detail":
            drop_cross_attention(net)  # before loading: the converted keys have no attn2 / norm2
        part = convert_unet(sd, prefix, ldm_unet, role)
        _load(net, part, f"{role} UNet")
    _load(vae, convert_vae(sd), "VAE")
    for key in SCHEDULE_KEYS:
        if key not in sd:
            raise ModelUnavailable(f"the checkpoint has no {key!r} buffer: the schedule must come from the checkpoint (research §7)")
    dev = torch.device(device)
    synth, detail = synth.to(dev, dtype).eval(), detail.to(dev, dtype).eval()
    vae = vae.to(dev, torch.float32).eval()
    ac = [sd[k].float() for k in SCHEDULE_KEYS]
    return MagicFixup(synth, detail, vae, *ac, device=dev, dtype=dtype)


def _load(net, part: dict, what: str) -> None:
    missing, unexpected = net.load_state_dict(part, strict=False, assign=True)
    if missing or unexpected:
        first = (list(missing) + list(unexpected))[:5]
        raise ModelUnavailable(f"Magic Fixup {what}: {len(missing)} missing, {len(unexpected)} unexpected keys (first: {first})")


# --- preprocessing (§9): the coarse edit and the reference photo -> model inputs -------------------


def resize_rgba(rgba, size: int = 512):
    """Pillow's default (bicubic) resize of an RGBA uint8 image; Pillow filters in premultiplied alpha."""
    import numpy as np
    from PIL import Image

    im = Image.fromarray(np.asarray(rgba, dtype=np.uint8))
    return np.asarray(im if im.size == (size, size) else im.resize((size, size)))


def roundtrip_lut_f16():
    """The uint8 levels the reference's float16 round trip (v/255 -> [-1, 1] -> [0, 1] -> x255 -> truncate) produces."""
    import numpy as np

    v = torch.arange(256, dtype=torch.float16) / 255
    v = (v - 0.5) / 0.5
    v = (v + 1) / 2 * 255
    return v.to(torch.uint8).numpy().astype(np.uint8)


def hole_masks(alpha):
    """(holes, dilated): alpha < 0.5, then one 7x7 dilation (outside the image is not a hole)."""
    import cv2
    import numpy as np

    holes = (np.asarray(alpha) < 0.5).astype(np.uint8)
    dilated = cv2.dilate(holes, np.ones((7, 7), np.uint8), iterations=1, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return holes, dilated


def fill_holes(rgb_u8, dilated):
    """OpenCV Navier-Stokes inpainting, radius 3, of the dilated holes (what the reference feeds its VAE)."""
    import cv2
    import numpy as np

    return cv2.inpaint(np.ascontiguousarray(rgb_u8), dilated, 3, cv2.INPAINT_NS)


def mask_latent(alpha: Tensor, size: int) -> Tensor:
    """The soft alpha at latent size: bilinear, half-pixel centres, no antialias (the reference's environment)."""
    return F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


@dataclass
class FixupInputs:
    inpaint_image: Tensor  # (1, 3, S, S) in [-1, 1]: the hole-filled coarse edit
    ref_image: Tensor  # (1, 3, S, S) in [-1, 1]
    alpha: Tensor  # (1, 1, S, S) in [0, 1], soft


def prepare(edit_rgba, ref_rgb, size: int = 512) -> FixupInputs:
    """Coarse edit (RGBA, alpha 0 = hole) and reference photo (RGB), any size -> the model's inputs at ``size``."""
    import numpy as np
    from PIL import Image

    edit = resize_rgba(edit_rgba, size)
    ref = np.asarray(Image.fromarray(np.asarray(ref_rgb, dtype=np.uint8)).convert("RGB").resize((size, size)))
    alpha = edit[..., 3].astype(np.float32) / 255.0
    rgb = roundtrip_lut_f16()[edit[..., :3]]
    _, dilated = hole_masks(alpha)
    filled = fill_holes(rgb, dilated)

    def to_tensor(u8):
        return torch.from_numpy(u8.astype(np.float32) / 255.0 * 2 - 1).permute(2, 0, 1)[None]

    return FixupInputs(to_tensor(filled), to_tensor(ref), torch.from_numpy(alpha)[None, None])


# --- the real checkpoint and the multi-view pipeline ---------------------------------------------

FULL_UNET = dict(in_channels=9, out_channels=4, model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=2,
                 attention_resolutions=[4, 2, 1], num_heads=8, image_size=64)  # fmt: skip
FULL_VAE = dict(in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, resolution=512)
DROP = ("cond_stage_model.", "proj_out.", "learnable_vector")
SIZE = 512  # trained and run at 512x512 only (inputs are resized, aspect distorted, as the reference does)


def load_magic_fixup(
    source: str = "magicfixup", *, dtype: str = "auto", device: str = "auto", unet: dict = FULL_UNET, vae: dict = FULL_VAE, log=print
) -> MagicFixup:
    """The released pickle (registry key, or a local path), read tensors-only and converted once into the
    model cache as safetensors (without DINO and other dead parts); ``"tiny"`` builds a random small one."""
    from safetensors.torch import load_file

    from ...registry import MODELS
    from ..weights import converted_cache, load_tensor_pickle, pick_device, save_converted, torch_dtype, weights_file

    dev = pick_device(device)
    if source == "tiny":
        return tiny_magic_fixup(device=str(dev))
    if source in MODELS:
        entry = MODELS[source]
        log(f"Magic Fixup weights are under the {entry.licence}: non-commercial research use only")
        path = weights_file(source)  # the hub's magicfu_weights (a pickle without an extension)
    else:
        path = source
    if str(path).endswith(".safetensors"):
        out = Path(path)
    else:
        out = converted_cache("magic_fixup", path) / "model.safetensors"
        if not out.exists():
            log(f"converting {Path(path).name} ({Path(path).stat().st_size / 2**30:.1f} GiB) to safetensors once -> {out}")
            sd = load_tensor_pickle(path, Path(path).name)
            save_converted({k: v for k, v in sd.items() if not k.startswith(DROP)}, out)
    mfx = from_state_dict(load_file(str(out)), unet, vae, 4, str(dev), torch_dtype(dtype, dev))
    log(f"Magic Fixup schedule from the checkpoint: {mfx.schedule_kind}")
    return mfx


def tiny_magic_fixup(seed: int = 0, device: str = "cpu") -> MagicFixup:
    """Random small model in the fixtures' layout (labelled), built through the same key mapping."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..tiny import TINY_LABEL

    ldm = dict(in_channels=9, out_channels=4, model_channels=32, channel_mult=[1, 1, 1], num_res_blocks=2, attention_resolutions=[1, 2],
               num_heads=2, image_size=32)  # fmt: skip
    torch.manual_seed(seed)
    synth, detail = UNet2DConditionModel(**unet_config(ldm)), UNet2DConditionModel(**unet_config(ldm))
    vae = AutoencoderKL(**vae_config(dict(in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, resolution=64)))
    ac = schedules.alphas_cumprod_from_betas(schedules.linear_betas(0.00085**0.5, 0.012**0.5) ** 2).float()
    m = MagicFixup(synth.eval(), detail.eval(), vae.eval(), ac, ac.sqrt(), (1 - ac).sqrt(), torch.device(device), labels=[TINY_LABEL])
    return m.to(device)
