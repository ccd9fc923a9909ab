"""GroupNorm (and GroupNorm + SiLU) as one Triton kernel: an eager speed lever for #17, opt-in.

On an H200 PyTorch's CUDA group norm took 24 % of a coupled IC-Light x SEVA edit's GPU time, as
much as every convolution (docs/performance.md, "Where a coupled step's GPU time goes"), and the
SiLU after it is one more read and write. Statistics from plain sums in separate torch kernels
(``sum_group_norm``) measured no faster: the passes over memory, not the arithmetic, are the cost.
Here one program per (sample, group) reads its group twice (statistics, then normalise) and writes
once, the per-channel affine and an optional SiLU applied on the way out: a fused GroupNorm + SiLU
moves 3 tensors' worth of bytes where the native pair moves about 6. No compile step: Triton builds
the kernel on first use (about a second per dtype/flag set, cached on disk by Triton).

Statistics accumulate in float32 around a pivot (each group's first element), so a large common
offset does not cancel away the variance. Inputs must be contiguous (N, C, ...) tensors, as both
networks' activations are; others, and tensors on a CPU, take PyTorch's own functions (``group_norm``).
On a CPU with ``TRITON_INTERPRET=1`` the kernel runs in Triton's interpreter: how the tests check it.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernel():
    from .group_norm_kernel import group_norm_kernel  # imports triton: only when the kernel is used

    return group_norm_kernel


def triton_group_norm(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool = False) -> Tensor:
    """``F.group_norm`` (then ``F.silu`` with ``silu``) of a contiguous (N, C, ...) tensor, by the kernel."""
    n, c = x.shape[:2]
    if c % groups or not x.is_contiguous():
        raise ValueError(f"triton_group_norm needs a contiguous (N, C, ...) tensor with C divisible by {groups}; got {tuple(x.shape)}")
    y = torch.empty_like(x)
    length = x[0, : c // groups].numel()
    block = min(4096, max(128, 1 << (length - 1).bit_length()))
    dummy = x.new_empty(0)
    _kernel()[(n * groups,)](
        x, weight if weight is not None else dummy, bias if bias is not None else dummy, y,
        x[0, 0].numel(), c // groups, groups, eps,
        HAS_W=weight is not None, HAS_B=bias is not None, SILU=silu, BLOCK=block, num_warps=8 if block >= 2048 else 4,
    )  # fmt: skip
    return y


def group_norm(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool = False) -> Tensor:
    """The kernel where it can run (CUDA, or the interpreter), PyTorch's functions elsewhere."""
    if (x.is_cuda or interpreting()) and x.is_contiguous() and x.shape[1] % groups == 0:
        return triton_group_norm(x, groups, weight, bias, eps, silu)
    y = F.group_norm(x.float(), groups, None if weight is None else weight.float(), None if bias is None else bias.float(), eps)
    return (F.silu(y) if silu else y).to(x.dtype)


def _forward(norm: nn.GroupNorm, silu: bool, x: Tensor) -> Tensor:
    return group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu)


def use_triton_group_norm(module: nn.Module) -> tuple[int, int]:
    """Every ``nn.GroupNorm`` in ``module`` computes with the kernel; one directly followed by
    ``nn.SiLU`` in an ``nn.Sequential`` (SEVA's ResBlocks and output head) also applies the SiLU,
    and that ``nn.SiLU`` becomes an ``nn.Identity``. Returns (norms, of them fused with SiLU).

    Parameters stay where they are (state-dict keys unchanged); each norm's ``forward`` is replaced.
    """
    fused: set[int] = set()
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.GroupNorm) and type(seq[i + 1]) is nn.SiLU:
                fused.add(id(seq[i]))
                seq[i + 1] = nn.Identity()
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for m in norms:
        m.forward = functools.partial(_forward, m, id(m) in fused)
    return len(norms), len(fused)
