"""GroupNorm (+ SiLU) kernels alone at the shapes of a coupled 21-view edit: time and bandwidth.

    python bench/group_norm_kernels.py --out group_norm.json          # GPU (bf16, the real shapes)
    TRITON_INTERPRET=1 python bench/group_norm_kernels.py --tiny      # plumbing check on a CPU

Per shape: PyTorch's group norm, group norm + SiLU (what SEVA's ResBlocks run), the same from sums
(``backend.models.sum_group_norm``) and the fused Triton kernel (``backend.models.triton_group_norm``),
each the median of CUDA-event timings over rotating inputs (so the L2 cache does not hold them), with
the bytes a kernel must move at least (read once, write once) over that time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.models.sum_group_norm import sum_group_norm  # noqa: E402
from backend.models.triton_group_norm import triton_group_norm  # noqa: E402

# (N, C, H, W): SEVA's levels at 576² (T 21, CFG batch 42) and the IC-Light UNet's (batch 40, CFG x 20 views)
SHAPES = [(42, 320, 72, 72), (42, 640, 36, 36), (42, 1280, 18, 18), (42, 1280, 9, 9), (40, 320, 72, 72), (40, 640, 36, 36)]
TINY = [(2, 64, 8, 8), (2, 128, 4, 4)]


def timed(fn, inputs: list, repeats: int, cuda: bool) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, cycling through ``inputs``."""
    fn(inputs[0])
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="small shapes, float32, a few repeats (CPU plumbing check)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    cuda = torch.cuda.is_available() and not a.tiny
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    repeats = a.repeats if cuda else 3
    rows = []
    for shape in TINY if a.tiny else SHAPES:
        c = shape[1]
        w, b = torch.randn(c, device=dev, dtype=dtype), torch.randn(c, device=dev, dtype=dtype)
        inputs = [torch.randn(shape, device=dev, dtype=dtype) for _ in range(2 if a.tiny else 4)]
        kernels = {
            "native": lambda x, w=w, b=b: F.group_norm(x, 32, w, b, 1e-5),
            "native+silu": lambda x, w=w, b=b: F.silu(F.group_norm(x, 32, w, b, 1e-5)),
            "sums": lambda x, w=w, b=b: sum_group_norm(x, 32, w, b, 1e-5),
            "triton": lambda x, w=w, b=b: triton_group_norm(x, 32, w, b, 1e-5),
            "triton+silu": lambda x, w=w, b=b: triton_group_norm(x, 32, w, b, 1e-5, silu=True),
        }
        row = {"shape": list(shape)}
        for name, fn in kernels.items():
            s = timed(fn, inputs, repeats, cuda)
            row[f"{name}_ms"] = s * 1e3
            row[f"{name}_gbps"] = 2 * inputs[0].numel() * inputs[0].element_size() / s / 1e9
        rows.append(row)
    names = ["native", "native+silu", "sums", "triton", "triton+silu"]
    print(f"{torch.cuda.get_device_name() if cuda else platform.processor() or 'cpu'}, {dtype}; ms (GB/s at one read + one write)")
    print("| shape | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for r in rows:
        print(f"| {tuple(r['shape'])} | " + " | ".join(f"{r[n + '_ms']:.3f} ({r[n + '_gbps']:.0f})" for n in names) + " |")
    if a.out:
        device = torch.cuda.get_device_name() if cuda else "cpu"
        settings = {"device": device, "dtype": str(dtype), "torch": torch.__version__, "repeats": repeats}
        Path(a.out).write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
