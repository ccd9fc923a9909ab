"""Where a SEVA network call spends its GPU time (torch.profiler, top kernels by CUDA time).

python bench/seva_profile.py [--channels-last] [--rows 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.models.seva import SevaConfig, SevaNet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        net = SevaNet(SevaConfig()).eval().requires_grad_(False)
    torch.set_default_dtype(torch.float32)
    net.use_channels_last(args.channels_last)
    b, h = 42, 72
    x = torch.randn(b, 11, h, h, device="cuda", dtype=torch.bfloat16)
    t = torch.randint(0, 1000, (b,), device="cuda")
    ctx = torch.randn(b, 1, 1024, device="cuda", dtype=torch.bfloat16)
    dense = torch.randn(b, 6, h, h, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        for _ in range(2):
            net(x, t, ctx, dense, 21)
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            for _ in range(3):
                net(x, t, ctx, dense, 21)
            torch.cuda.synchronize()
    # aten ops (with the kernels they launched) by device time, per network call
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    rows.sort(key=lambda e: -e.device_time_total)
    for e in rows[: args.rows]:
        print(f"{e.device_time_total / 3 / 1000:8.2f} ms/call  x{e.count // 3:4d}  {e.key:28s} {str(e.input_shapes)[:110]}")


if __name__ == "__main__":
    main()
