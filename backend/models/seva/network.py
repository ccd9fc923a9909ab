"""SEVA's denoising network (research/seva.md §1), written from the spec.

An SD-2.1-style UNet whose transformers are "multiview": per-frame (2-D) or joint over all T
frames (3-D) spatial attention, plus attention along the frame axis at every pixel (time mix).
Module attribute paths equal the official checkpoint's keys (no prefix), so
``state_dict()`` loads ``modelv1.1.safetensors`` as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


@dataclass
class SevaConfig:
    """Hyper-parameters, named and defaulted as the reference's ``SevaParams`` (both v1.0 and v1.1)."""

    in_channels: int = 11
    model_channels: int = 320
    out_channels: int = 4
    num_frames: int = 21
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [4, 2, 1])
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_head_channels: int = 64
    transformer_depth: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    context_dim: int = 1024
    dense_in_channels: int = 6
    dropout: float = 0.0
    unflatten_names: list[str] = field(default_factory=lambda: ["middle_ds8", "output_ds4", "output_ds2"])

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[cos, sin] sinusoidal embedding of integer timesteps, float32 op order of the reference."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics (ResBlocks and the output head).

    On CUDA, 16-bit inputs go to the native kernel, which accumulates in float32 itself; the
    explicit up-cast elsewhere gives the same statistics without two extra passes over memory.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and self.weight.dtype == x.dtype:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type(x.dtype)


class Attention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        ctx = x if context is None else context
        if context is not None and context.shape[1] == 1:
            # one key: softmax is 1, so every query gets to_out(to_v(ctx)) -- skip q, k and the product
            out = self.to_out(self.to_v(ctx))
            return out.expand(-1, x.shape[1], -1)
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        n, h = x.shape[0], self.heads
        q, k, v = (a.view(n, a.shape[1], h, -1).transpose(1, 2) for a in (q, k, v))
        # whichever SDPA backend the device offers: flash/efficient on CUDA, math on CPU
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(n, x.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)
        self.dim_out = dim_out

    def forward(self, x: Tensor) -> Tensor:
        if type(self.proj) is not nn.Linear:  # e.g. backend.models.fp8's Fp8Linear: one product, then split
            value, gate = self.proj(x).chunk(2, dim=-1)
            return F.gelu(gate) * value
        # two half GEMMs instead of chunking one output: both halves come out contiguous, so the
        # GELU and the product run as vectorised kernels (same weights, same math)
        w, b, n = self.proj.weight, self.proj.bias, self.dim_out
        g = F.gelu(F.linear(x, w[n:], b[n:]))
        return g.mul_(F.linear(x, w[:n], b[:n]))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LN: self-attention, cross-attention to the CLIP context, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class TransformerBlockTimeMix(nn.Module):
    """Attention along the frame axis at every token position; the last feed-forward has no residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim)
        self.attn1 = Attention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, time_context: Tensor, num_frames: int) -> Tensor:
        """x (B·T, S, C) -> (B·T, S, C); ``time_context`` (B·S, 1, ctx), each sample's first-frame token."""
        bt, s, c = x.shape
        b = bt // num_frames
        x = x.view(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), time_context) + x
        x = self.ff(self.norm3(x))
        return x.view(b, s, num_frames, c).transpose(1, 2).reshape(bt, s, c)


class MultiviewTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, name: str, joint_3d: bool) -> None:
        super().__init__()
        self.name, self.joint_3d = name, joint_3d
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(channels, heads, dim_head, context_dim) for _ in range(depth))
        self.time_mix_blocks = nn.ModuleList(TransformerBlockTimeMix(channels, heads, dim_head, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        bt, c, rh, rw = x.shape
        s, t = rh * rw, num_frames
        b = bt // t
        time_context = context[::t].repeat_interleave(s, dim=0)  # first frame's token of each sample
        spatial_context = context[::t] if self.joint_3d else context
        x_in = x
        x = self.norm(x).permute(0, 2, 3, 1).reshape(bt, s, c)
        x = self.proj_in(x)
        for block, mix in zip(self.transformer_blocks, self.time_mix_blocks, strict=True):
            if self.joint_3d:
                x = block(x.reshape(b, t * s, c), spatial_context).reshape(bt, s, c)
            else:
                x = block(x, spatial_context)
            x = x + mix(x, time_context, t)
        x = self.proj_out(x)
        return x.reshape(bt, rh, rw, c).permute(0, 3, 1, 2) + x_in


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dense_in: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.dense_emb_layers = nn.Sequential(nn.Conv2d(dense_in, 2 * c_in, 1))
        self.out_layers = nn.Sequential(GroupNorm32(32, c_out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip_connection = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor, dense: Tensor) -> Tensor:
        h = self.in_layers[1](self.in_layers[0](x))
        # Plücker modulation between SiLU and the first conv, at this block's resolution
        p = F.interpolate(dense, size=h.shape[-2:], mode="bilinear", align_corners=True)
        scale, shift = self.dense_emb_layers(p.to(h.dtype)).chunk(2, dim=1)
        h = self.in_layers[2](h * (1 + scale) + shift)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class SevaBlock(nn.Sequential):
    """A UNet block: its layers, each given the inputs it uses."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor, dense: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, dense)
            elif isinstance(layer, MultiviewTransformer):
                h = layer(h, context, num_frames)
            else:
                h = layer(h)
        return h


class SevaNet(nn.Module):
    """``forward(x, t, context, dense, num_frames) -> eps``.

    x (B·T, in_channels, h, w): [c_in-scaled latent (4), mask (1), Plücker (6)]; t (B·T,) integer
    timesteps; context (B·T, 1, context_dim) CLIP tokens; dense (B·T, 6, h, w) Plücker map.
    """

    def __init__(self, config: SevaConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SevaConfig()
        c0 = cfg.model_channels
        emb_dim = 4 * c0
        self.time_embed = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def mvt(ch: int, depth: int, name: str) -> MultiviewTransformer:
            return MultiviewTransformer(
                ch, ch // cfg.num_head_channels, cfg.num_head_channels, depth, cfg.context_dim, name, name in cfg.unflatten_names
            )

        def res(a: int, b: int) -> ResBlock:
            return ResBlock(a, b, emb_dim, cfg.dense_in_channels)

        self.input_blocks = nn.ModuleList([SevaBlock(nn.Conv2d(cfg.in_channels, c0, 3, padding=1))])
        chans, ch, ds = [c0], c0, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * c0)]
                ch = mult * c0
                if ds in cfg.attention_resolutions:
                    layers.append(mvt(ch, cfg.transformer_depth[level], f"input_ds{ds}"))
                self.input_blocks.append(SevaBlock(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(SevaBlock(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = SevaBlock(res(ch, ch), mvt(ch, cfg.transformer_depth[-1], f"middle_ds{ds}"), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mult * c0)]
                ch = mult * c0
                if ds in cfg.attention_resolutions:
                    layers.append(mvt(ch, cfg.transformer_depth[level], f"output_ds{ds}"))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(SevaBlock(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> SevaNet:
        """NHWC activations: faster 16-bit convolutions on GPUs, and the transformers' token views become free."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    @property
    def dtype(self) -> torch.dtype:
        return self.out[-1].weight.dtype  # a convolution: stays in the compute dtype when linears go fp8

    def forward(self, x: Tensor, t: Tensor, context: Tensor, dense: Tensor, num_frames: int | None = None) -> Tensor:
        num_frames = num_frames or self.config.num_frames
        if x.shape[0] % num_frames:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of num_frames={num_frames}")
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(self.dtype))
        skips = []
        h = x.to(self.dtype)
        context, dense = context.to(self.dtype), dense.to(self.dtype)
        if self.channels_last:
            h, dense = h.contiguous(memory_format=torch.channels_last), dense.contiguous(memory_format=torch.channels_last)
        for block in self.input_blocks:
            h = block(h, emb, context, dense, num_frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, dense, num_frames)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, dense, num_frames)
        return self.out(h.type(x.dtype) if x.dtype == self.dtype else h)
