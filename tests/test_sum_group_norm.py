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
    from diffusers import UNet2DConditionModel

    from backend.models.editors.neural_gaffer import TINY_UNET
    from backend.models.seva.encoders import tiny_seva_config
    from backend.models.seva.network import SevaNet

    torch.manual_seed(0)
    net = SevaNet(tiny_seva_config()).eval()
    x, t = torch.randn(3, 11, 8, 8), torch.tensor([10, 500, 900])
    ctx, dense = torch.randn(3, 1, 64), torch.randn(3, 6, 8, 8)
    keys = list(net.state_dict())
    with torch.no_grad():
        ref = net(x, t, ctx, dense, 3)
        assert use_sum_group_norm(net) > 10
        assert torch.allclose(net(x, t, ctx, dense, 3), ref, atol=1e-4, rtol=1e-4)
    assert list(net.state_dict()) == keys

    unet = UNet2DConditionModel(**TINY_UNET).eval()
    sample = torch.randn(2, unet.config.in_channels, 16, 16)
    hidden = torch.randn(2, 4, unet.config.cross_attention_dim)
    with torch.no_grad():
        ref = unet(sample, 10, hidden).sample
        assert use_sum_group_norm(unet) > 5
        assert torch.allclose(unet(sample, 10, hidden).sample, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path itself runs only where CUDA exists; its math runs above")
def test_cuda_bfloat16_matches_native():
    x, w, b = (t.cuda() for t in activations(torch.bfloat16))
    exact = F.group_norm(x.float(), 32, w.float(), b.float(), 1e-6)
    ours = (sum_group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    native = (F.group_norm(x, 32, w, b, 1e-6).float() - exact).norm() / exact.norm()
    assert ours < 1.2 * native + 1e-5
