"""The two networks a GroupNorm replacement must leave unchanged (a tiny SevaNet and a tiny diffusers
UNet, each with fixed inputs), and the before/after check both replacement tests run on them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def tiny_seva() -> tuple[nn.Module, Callable[[], Tensor]]:
    from backend.models.seva.encoders import tiny_seva_config
    from backend.models.seva.network import SevaNet

    torch.manual_seed(0)
    net = SevaNet(tiny_seva_config()).eval()
    x, t = torch.randn(3, 11, 8, 8), torch.tensor([10, 500, 900])
    ctx, dense = torch.randn(3, 1, 64), torch.randn(3, 6, 8, 8)
    return net, lambda: net(x, t, ctx, dense, 3)


def tiny_unet() -> tuple[nn.Module, Callable[[], Tensor]]:
    from diffusers import UNet2DConditionModel

    from backend.models.editors.neural_gaffer import TINY_UNET

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET).eval()
    sample = torch.randn(2, unet.config.in_channels, 16, 16)
    hidden = torch.randn(2, 4, unet.config.cross_attention_dim)
    return unet, lambda: unet(sample, 10, hidden).sample


def swap_keeps_outputs(net: nn.Module, run: Callable[[], Tensor], swap: Callable[[nn.Module], object]):
    """``swap(net)``'s result, after asserting that the outputs (within 1e-4) and state-dict keys stayed."""
    keys = list(net.state_dict())
    with torch.no_grad():
        ref = run()
        result = swap(net)
        got = run()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert list(net.state_dict()) == keys
    return result
