"""GroupNorm (and GroupNorm + SiLU) as one Triton kernel: an eager speed lever for #17, opt-in.

On an H200 PyTorch's CUDA group norm took 24 % of a coupled IC-Light x SEVA edit's GPU time, as
much as every convolution (docs/performance.md, "Where a coupled step's GPU time goes"), and the
SiLU after it is one more read and write. Statistics from plain sums in separate torch kernels
(``sum_group_norm``) measured no faster: the passes over memory, not the arithmetic, are the cost.
Here one program per (sample, group) reads its group twice (statistics, then normalise) and writes
once, the per-channel affine and an optional SiLU applied on the way out: a fused GroupNorm + SiLU
moves 3 tensors' worth of bytes where the native pair moves at least 5 (statistics read, normalise
read + write, SiLU read + write). No compile step: Triton builds the kernel on first use and keeps
it in its disk cache. Unmeasured on a GPU yet (docs/performance.md says which bench calls decide).

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


def fits_kernel(x: Tensor, groups: int) -> bool:
    """The kernel's layout: a contiguous (N, C, ...) tensor, C divisible by ``groups``."""
    return x.is_contiguous() and x.shape[1] % groups == 0


def triton_group_norm(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, silu: bool = False) -> Tensor:
    """``F.group_norm`` (then ``F.silu`` with ``silu``) of a contiguous (N, C, ...) tensor, by the kernel."""
    n, c = x.shape[:2]
    if not fits_kernel(x, groups):
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
    if (x.is_cuda or interpreting()) and fits_kernel(x, groups):
        return triton_group_norm(x, groups, weight, bias, eps, silu)
    y = F.group_norm(x.float(), groups, None if weight is None else weight.float(), None if bias is None else bias.float(), eps)
    return (F.silu(y) if silu else y).to(x.dtype)


def _forward(norm: nn.GroupNorm, silu: bool, x: Tensor) -> Tensor:
    return group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu)


def _resnet_block_forward(block: nn.Module, x: Tensor, temb: Tensor | None, *args, **kwargs) -> Tensor:
    """A diffusers ``ResnetBlock2D`` (no resampling, additive time embedding, SiLU) with each of its
    two GroupNorm + SiLU pairs as one kernel; the same arithmetic as the block's own forward."""
    h = block.conv1(_forward(block.norm1, True, x))
    if block.time_emb_proj is not None and temb is not None:
        h = h + block.time_emb_proj(temb if block.skip_time_act else F.silu(temb))[:, :, None, None]
    h = block.conv2(block.dropout(_forward(block.norm2, True, h)))
    skip = x if block.conv_shortcut is None else block.conv_shortcut(x)
    return (skip + h) / block.output_scale_factor


def _plain_resnet_block(m: nn.Module) -> bool:
    """A diffusers ``ResnetBlock2D`` whose forward ``_resnet_block_forward`` computes exactly."""
    return (
        type(m).__name__ == "ResnetBlock2D"
        and getattr(m, "upsample", 0) is None
        and getattr(m, "downsample", 0) is None
        and getattr(m, "time_embedding_norm", "") == "default"
        and type(getattr(m, "nonlinearity", None)) is nn.SiLU
        and isinstance(getattr(m, "norm1", None), nn.GroupNorm)
        and isinstance(getattr(m, "norm2", None), nn.GroupNorm)
    )


def use_triton_group_norm(module: nn.Module) -> tuple[int, int]:
    """Every ``nn.GroupNorm`` in ``module`` computes with the kernel. Those a SiLU follows are fused
    with it: in an ``nn.Sequential`` (SEVA's ResBlocks and output head; the ``nn.SiLU`` becomes an
    ``nn.Identity``) and in diffusers' plain ``ResnetBlock2D`` (its forward replaced by
    ``_resnet_block_forward``). Returns (norms, of them fused with SiLU).

    Parameters stay where they are (state-dict keys unchanged); only forwards are replaced.
    """
    with_silu: set[int] = set()  # norms whose own forward applies the SiLU (the Sequential calls them)
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.GroupNorm) and type(seq[i + 1]) is nn.SiLU:
                with_silu.add(id(seq[i]))
                seq[i + 1] = nn.Identity()
    blocks = [m for m in module.modules() if _plain_resnet_block(m)]
    for block in blocks:
        block.forward = functools.partial(_resnet_block_forward, block)
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for m in norms:
        m.forward = functools.partial(_forward, m, id(m) in with_silu)
    return len(norms), len(with_silu) + 2 * len(blocks)
