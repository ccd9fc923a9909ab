"""The fused GroupNorm(+SiLU) Triton kernel against PyTorch, in Triton's interpreter on the CPU
(and compiled, where CUDA exists)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backend.models import triton_group_norm as tgn

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or tgn.interpreting()), reason="no CUDA and no TRITON_INTERPRET=1 (tests/conftest.py sets it on CPUs)"
)


def reference(x, groups, w, b, eps, silu):
    y = F.group_norm(x.double(), groups, None if w is None else w.double(), None if b is None else b.double(), eps)
    return F.silu(y) if silu else y


@pytest.mark.parametrize("shape,groups", [((3, 64, 9, 7), 32), ((2, 96, 5, 5, 2), 32), ((4, 40, 300), 8)])
@pytest.mark.parametrize("silu", [False, True])
def test_float32_matches_pytorch(shape, groups, silu):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 8 * torch.randn(shape[0], shape[1], *[1] * (len(shape) - 2), generator=g)
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    y = tgn.triton_group_norm(x, groups, w, b, 1e-5, silu)
    assert (y.double() - reference(x, groups, w, b, 1e-5, silu)).abs().max() < 2e-5


def test_large_offset_and_no_affine():
    """A group far from zero (mean 1000 standard deviations away) keeps its variance: pivoted sums."""
    x = torch.randn(2, 32, 33, 31) + 1000.0
    y = tgn.triton_group_norm(x, 32, None, None, 1e-6)
    assert (y.double() - reference(x, 32, None, None, 1e-6, False)).abs().max() < 1e-3


def test_bfloat16_is_computed_in_float32_and_rounded_once():
    """bf16 in and out, float32 inside: within one bf16 step (2^-8 relative when rounded, 2^-7 when
    truncated, as Triton's CPU interpreter casts) of the float64 result of the same bf16 inputs."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 64, 16, 16, generator=g) + 4).bfloat16()
    w, b = (torch.rand(64, generator=g) + 0.5).bfloat16(), torch.randn(64, generator=g).bfloat16()
    truth = reference(x.float(), 32, w.float(), b.float(), 1e-5, True)
    got = tgn.triton_group_norm(x, 32, w, b, 1e-5, silu=True).double()
    assert ((got - truth).abs() <= 2**-7 * truth.abs() + 1e-6).all()


def test_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="contiguous"):
        tgn.triton_group_norm(torch.randn(2, 64, 8, 8).transpose(2, 3), 32, None, None, 1e-5)
    with pytest.raises(ValueError, match="divisible"):
        tgn.triton_group_norm(torch.randn(2, 60, 8, 8), 32, None, None, 1e-5)


def test_networks_fuse_silu_and_keep_their_outputs():
    from norm_swap import swap_keeps_outputs, tiny_seva, tiny_unet

    from backend.models.seva.network import ResBlock

    net, run = tiny_seva()
    norms, fused = swap_keeps_outputs(net, run, tgn.use_triton_group_norm)
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    assert fused == 2 * len(blocks) + 1 and norms > fused  # each ResBlock's two, the output head; transformer norms alone
    assert all(isinstance(m.in_layers[1], nn.Identity) and isinstance(m.out_layers[1], nn.Identity) for m in blocks)

    unet, run = tiny_unet()
    norms, fused = swap_keeps_outputs(unet, run, tgn.use_triton_group_norm)
    resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert resnets and all(tgn._plain_resnet_block(m) for m in resnets)
    assert fused == 2 * len(resnets) and norms > fused  # each ResnetBlock2D's two; attention blocks' norms alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernel: CUDA only (the interpreter tests above run everywhere)")
def test_cuda_bfloat16_matches_native():
    x = torch.randn(42, 320, 72, 72, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(320, device="cuda", dtype=torch.bfloat16), torch.randn(320, device="cuda", dtype=torch.bfloat16)
    exact = F.silu(F.group_norm(x.float(), 32, w.float(), b.float(), 1e-5))
    ours = (tgn.triton_group_norm(x, 32, w, b, 1e-5, silu=True).float() - exact).norm() / exact.norm()
    native = (F.silu(F.group_norm(x, 32, w, b, 1e-5)).float() - exact).norm() / exact.norm()
    assert ours <= 1.05 * native  # one rounding where the native pair rounds twice
