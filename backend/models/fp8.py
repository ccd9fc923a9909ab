"""FP8 (e4m3) matrix products for inference: a speed mode for Hopper GPUs (#17), opt-in.

``Fp8Linear`` holds its weight in float8 e4m3 with one scale per output feature; every call scales
each input row by its own max (|x| up to 448, e4m3's largest value), casts it, and lets
``torch._scaled_mm`` multiply the two fp8 matrices with fp32 accumulation and undo both scales. On
Hopper that runs the GEMM at twice bf16's rate; the price is the extra pass over the activations
(max and cast) and e4m3's 3 mantissa bits, so its error against bf16 is reported, never assumed
(``bench/speed_modes.py``).

    n = to_fp8(seva.net)            # every eligible nn.Linear, in place; returns how many
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448


def quantise_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> e4m3 (M, K) and fp32 scales (M, 1) with x ≈ q * scale (each row's max maps to 448)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class Fp8Linear(nn.Module):
    """An ``nn.Linear`` whose product runs in fp8; output in the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantise_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", q)  # (N, K) row-major: its .t() is the column-major operand _scaled_mm wants
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, N)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q, scale = quantise_rows(x.reshape(-1, self.in_features))
        # row-wise scaled fp8 products on CUDA return bf16 only; the CPU kernel also gives fp32
        out_dtype = torch.bfloat16 if x.is_cuda else x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.float32
        y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8 e4m3"


def eligible(linear: nn.Linear, min_features: int) -> bool:
    """_scaled_mm needs both dimensions divisible by 16; tiny products gain nothing from fp8."""
    k, n = linear.in_features, linear.out_features
    return k % 16 == 0 and n % 16 == 0 and min(k, n) >= min_features


def to_fp8(module: nn.Module, min_features: int = 64) -> int:
    """Replaces every eligible ``nn.Linear`` under ``module`` by an ``Fp8Linear`` (in place); returns the count."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear and eligible(child, min_features):
            setattr(module, name, Fp8Linear(child))
            count += 1
        else:
            count += to_fp8(child, min_features)
    return count


def reference_fp8_linear(x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
    """What ``Fp8Linear`` computes, in plain fp32 arithmetic on the dequantised operands (for tests)."""
    q, scale = quantise_rows(x.reshape(-1, layer.in_features))
    w = layer.weight_fp8.float() * layer.weight_scale.t()
    y = F.linear(q.float() * scale, w, None if layer.bias is None else layer.bias.float())
    return y.reshape(*x.shape[:-1], layer.out_features)
