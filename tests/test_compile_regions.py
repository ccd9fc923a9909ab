"""``compile-regional`` (backend/models/speed.py): each repeated block compiled in place, sharing code.

Speed and warm-up are measured on a GPU (bench/speed_modes.py); here: the networks give the same
outputs, keep their keys, and blocks of one class and shape are traced once, not once per block. The
graphs go to dynamo's ``aot_eager`` backend (Inductor's code generation for twenty graphs would take
minutes on a CPU; tests/test_speed_modes.py runs Inductor through a whole job)."""

from __future__ import annotations

import functools

import pytest
import torch
from norm_swap import swap_keeps_outputs, tiny_seva, tiny_unet

from backend.models.speed import compile_regions, region_classes, resolve


@pytest.mark.parametrize("build", [tiny_seva, tiny_unet], ids=["seva", "unet"])
def test_regions_compile_once_per_class_and_shape_and_keep_outputs(build):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net, run = build()
    blocks = [m for m in net.modules() if isinstance(m, region_classes())]
    count = swap_keeps_outputs(net, run, functools.partial(compile_regions, backend="aot_eager"))
    assert count == len(blocks) > 0  # none of these blocks sits inside another
    assert all(b._compiled_call_impl is not None for b in blocks)
    graphs = counters["stats"]["unique_graphs"]
    # one graph per block class, parameter shapes and input shapes: fewer than blocks (the tiny SevaNet:
    # 20 graphs for 38 blocks), and no more than the number of block calls
    assert 0 < graphs < count, (graphs, count)
    with torch.no_grad():
        run()
    assert counters["stats"]["unique_graphs"] == graphs  # a second call reuses them


def test_regional_mode_is_a_job_speed_mode():
    from backend.jobs import Models

    assert resolve("compile-regional", "cuda") == "compile-regional"
    assert Models.model_validate({"speed": "compile-regional"}).speed == "compile-regional"
