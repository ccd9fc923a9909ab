"""FP8 linear layers (backend.models.fp8): the math on the CPU; the speed is measured on a GPU (bench/speed_modes.py)."""

import pytest
import torch
import torch.nn as nn

from backend.models.fp8 import E4M3_MAX, Fp8Linear, quantise_rows, reference_fp8_linear, to_fp8


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_rows_are_scaled_to_e4m3s_range_and_back():
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 64)[:, None]
    q, scale = quantise_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((64,), E4M3_MAX))  # every row uses the whole range
    assert rel(q.float() * scale, x) < 0.04  # 3 mantissa bits: about 2-3 % per element, whatever the row's magnitude


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_computes_the_dequantised_product_and_stays_near_the_full_precision_one(bias):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(256, 512, bias=bias)
    x = torch.randn(3, 40, 256, generator=g)
    f = Fp8Linear(lin)
    y = f(x)
    assert y.shape == (3, 40, 512) and y.dtype == x.dtype
    assert rel(y, reference_fp8_linear(x, f)) < 1e-5  # _scaled_mm = the product of the dequantised operands
    assert 1e-3 < rel(y, lin(x)) < 0.06  # e4m3's error is real and bounded
    yb = f(x.bfloat16())
    assert yb.dtype == torch.bfloat16 and rel(yb, lin(x)) < 0.06


def test_to_fp8_swaps_only_eligible_layers_and_seva_runs_on_them():
    from backend.models.seva import SevaConfig, SevaNet

    torch.manual_seed(0)
    cfg = SevaConfig(model_channels=64, num_frames=4, channel_mult=[1, 1], num_head_channels=32, context_dim=64)
    net = SevaNet(cfg).eval()
    T, h = 4, 8
    x = torch.randn(T, 11, h, h)
    args = (x, torch.full((T,), 500), torch.randn(T, 1, 64), torch.randn(T, 6, h, h), T)
    with torch.no_grad():
        ref = net(*args)
        n = to_fp8(net, min_features=64)
        out = net(*args)
    linears = [m for m in net.modules() if type(m) is nn.Linear]
    assert n > 10 and all(min(m.in_features, m.out_features) < 64 or m.in_features % 16 for m in linears)
    assert any(isinstance(m.proj, Fp8Linear) for m in net.modules() if type(m).__name__ == "GEGLU")  # the split path
    assert 1e-3 < rel(out, ref) < 0.1
