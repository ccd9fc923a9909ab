"""GroupNorm from two plain sums and one fused multiply-add: an eager speed lever for #17, opt-in.

On an H200 PyTorch's CUDA group norm took 24 % of a coupled IC-Light x SEVA edit's GPU time, as
much as every convolution (docs/performance.md, "Where a coupled step's GPU time goes"): its Welford
statistics kernels averaged 0.19 and 0.48 ms per call, where one read of SEVA's largest activation
(139 MB in bf16) takes about 35 us at the H200's bandwidth. Here the statistics are two bandwidth-bound
reductions (the sum and the sum of squares, accumulated in float32 without an up-cast copy) and the
normalisation is one ``addcmul`` with float32 per-channel scale and shift: three reads and one write.

The variance is E[x^2] - E[x]^2 in float32: exact enough while a group's |mean| stays within about a
hundred standard deviations (network activations are far inside that; the test checks an offset of
8). Measured on an H200 (``bench/speed_modes.py --modes eager-nobench,eager-gn``, session 8): no
faster than the native kernel (24.63 vs 24.50 s per edit), so it is in no speed mode; kept as a tested
option (docs/performance.md, "GroupNorm from sums").
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


def sum_group_norm(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.group_norm`` for (N, C, ...) inputs, statistics from sums (see the module's note)."""
    n, c = x.shape[:2]
    rows = x.reshape(n, groups, -1)
    count = rows.shape[-1]
    mean = rows.sum(-1, dtype=torch.float32) / count
    meansq = torch.linalg.vector_norm(rows, 2, dim=-1, dtype=torch.float32).square() / count
    rstd = torch.rsqrt((meansq - mean.square()).clamp(min=0) + eps)  # (N, G)
    scale = rstd.repeat_interleave(c // groups, dim=1)  # (N, C)
    shift = -mean.repeat_interleave(c // groups, dim=1) * scale
    if weight is not None:
        scale = scale * weight.float()
        shift = shift * weight.float()
    if bias is not None:
        shift = shift + bias.float()
    view = (n, c) + (1,) * (x.dim() - 2)
    # float32 scale and shift, the result written in x's dtype by the same kernel: rounding them to
    # 16 bits first would cost a group with a large mean (x * scale and shift nearly cancel) 4x the error
    return torch.addcmul(shift.view(view), x, scale.view(view), out=torch.empty_like(x))


def _forward(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    return sum_group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def use_sum_group_norm(module: nn.Module) -> int:
    """Every ``nn.GroupNorm`` in ``module`` (subclasses too) computes with ``sum_group_norm``; returns how many.

    Parameters and state-dict keys are untouched: only each norm's ``forward`` is replaced.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for m in norms:
        m.forward = functools.partial(_forward, m)
    return len(norms)
