"""GroupNorm from sums (backend.models.sum_group_norm): the math against F.group_norm; its speed is a bench row."""

import pytest
import torch
import torch.nn.functional as F

from backend.models.sum_group_norm import sum_group_norm, use_sum_group_norm


def activations(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # an offset of 8 standard deviations in part of the channels: the E[x^2] - E[x]^2 variance must hold
    x = torch.randn(3, 64, 9, 11, generator=g) * 3 + torch.linspace(-8, 8, 64).view(1, 64, 1, 1) * 3
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    return x.to(dtype), w.to(dtype), b.to(dtype)


def test_matches_group_norm_in_float32():
    x, w, b = activations()
    assert torch.allclose(sum_group_norm(x, 32, w, b, 1e-6), F.group_norm(x, 32, w, b, 1e-6), atol=5e-5)
    assert torch.allclose(sum_group_norm(x, 8, None, None, 1e-5), F.group_norm(x, 8, None, None, 1e-5), atol=5e-5)
    v = x[..., :5, 0]  # 3-D input (N, C, L)
    assert torch.allclose(sum_group_norm(v, 16, w, b, 1e-6), F.group_norm(v, 16, w, b, 1e-6), atol=5e-5)


def test_bfloat16_error_within_twice_the_native_kernels():
    x, w, b = activations(torch.bfloat16)
    exact = F.group_norm(x.float(), 32, w.float(), b.float(), 1e-6)
    ours = (sum_group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    native = (F.group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    assert sum_group_norm(x, 32, w, b, 1e-6).dtype == torch.bfloat16
    assert ours < 1.2 * native + 1e-5, (ours, native)


def test_networks_keep_their_outputs_and_keys():
    from norm_swap import swap_keeps_outputs, tiny_seva, tiny_unet

    assert swap_keeps_outputs(*tiny_seva(), use_sum_group_norm) > 10
    assert swap_keeps_outputs(*tiny_unet(), use_sum_group_norm) > 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path itself runs only where CUDA exists; its math runs above")
def test_cuda_bfloat16_matches_native():
    x, w, b = (t.cuda() for t in activations(torch.bfloat16))
    exact = F.group_norm(x.float(), 32, w.float(), b.float(), 1e-6)
    ours = (sum_group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    native = (F.group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    assert ours < 1.2 * native + 1e-5
