"""SEVA at its real shape on a GPU (random weights): network call speed, memory, VAE decode, whole window.

    python bench/seva_bench.py --out seva.json                # eager network, VAE decode, whole window
    python bench/seva_bench.py --compile --only network        # + torch.compile (about 100 s of compiling)
    python bench/seva_bench.py --tiny --device cpu             # plumbing check

Network call: 576², T = 21, CFG batch 42 (76.9 TFLOP per call). Reference figures on one H100
(research/seva.md §6 and the SEVA issue): eager fp16-autocast 0.387 s/call, compiled 0.247 s
after a 114 s compile, 5.8 GiB peak for the network alone; VAE decode of 21 frames at once
13.5 GiB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.models.seva import SevaConfig, SevaNet  # noqa: E402
from backend.models.seva.encoders import ClipConditioner, SevaModel, SevaVAE, tiny_seva_config  # noqa: E402

FLOP_PER_CALL = 76.9e12
GiB = 2**30

SD21_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
)
CLIP_H14 = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=16,
    num_hidden_layers=32,
    image_size=224,
    patch_size=14,
    projection_dim=1024,
)


def build(fn, device, dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return fn().eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(old)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else float("nan")


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def time_calls(fn, n: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def bench_network(net, cfg, args, device, dtype, compiled: bool) -> dict:
    T, h = args.T, args.size // 8
    b = 2 * T
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, cfg.in_channels, h, h, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (b,), generator=g).to(device)
    ctx = torch.randn(b, 1, cfg.context_dim, generator=g).to(device, dtype)
    dense = torch.randn(b, 6, h, h, generator=g).to(device, dtype)
    model = torch.compile(net) if compiled else net
    weights = torch.cuda.memory_allocated() / GiB if device.type == "cuda" else float("nan")
    reset_peak(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(x, t, ctx, dense, T)
        sync(device)
        first = time.perf_counter() - t0
        model(x, t, ctx, dense, T)  # warm-up (autotuning, allocator)
        per_call = time_calls(lambda: model(x, t, ctx, dense, T), args.repeats, device)
    return {
        "first_call_s": first,
        "s_per_call": per_call,
        "tflops": FLOP_PER_CALL / per_call / 1e12 if args.size == 576 and T == 21 and not args.tiny else None,
        "peak_gib": peak_gib(device),
        "weights_gib": weights,
    }


def bench_vae(vae, args, device) -> dict:
    T, h = args.T, args.size // 8
    z = torch.randn(T, 4, h, h, generator=torch.Generator().manual_seed(1)).to(device)
    out = {}
    for chunk in (1, 4, T):
        wrapper = SevaVAE(vae, chunk=chunk)
        wrapper.decode(z[:1])
        reset_peak(device)
        secs = time_calls(lambda w=wrapper: w.decode(z), 1, device)
        out[f"decode_{T}_chunk{chunk}"] = {"s": secs, "peak_gib": peak_gib(device)}
    return out


def bench_window(model: SevaModel, args, device) -> dict:
    from backend.models.seva.cameras import orbit
    from backend.pipelines.novel_views import NovelViewSettings, PosedView, novel_views

    n = args.T
    start = torch.eye(4)
    start[2, 3] = -4.0
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), n)
    K = torch.tensor([[args.size * 0.96, 0, args.size / 2], [0, args.size * 0.96, args.size / 2], [0, 0, 1]])
    img = torch.rand(3, args.size, args.size) * 2 - 1
    inputs = [PosedView(c2w[0], K, args.size, args.size, img)]
    targets = [PosedView(c2w[i], K, args.size, args.size) for i in range(1, n)]
    s = NovelViewSettings(steps=args.window_steps, T=args.T, size=args.size)
    novel_views(model, inputs, targets, NovelViewSettings(steps=1, T=args.T, size=args.size))  # warm-up
    reset_peak(device)
    t0 = time.perf_counter()
    out = novel_views(model, inputs, targets, s)
    sync(device)
    total = time.perf_counter() - t0
    return {
        "targets": n - 1,
        "steps": args.window_steps,
        "total_s": total,
        "sampling_s_per_step": out.metadata["timings_s"]["sampling"] / args.window_steps,
        "vae_s": out.metadata["timings_s"]["vae"],
        "peak_gib": peak_gib(device),
        "projected_50_steps_s": total + out.metadata["timings_s"]["sampling"] / args.window_steps * (50 - args.window_steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--T", type=int, default=21)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window-steps", type=int, default=4)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the whole network")
    ap.add_argument("--channels-last", action="store_true", help="also time NHWC activations")
    ap.add_argument("--only", default="network,vae,window")
    ap.add_argument("--out", default=None)
    ap.add_argument("--commit", default=os.environ.get("COMMIT"))
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = tiny_seva_config() if args.tiny else SevaConfig()
    res: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "T": args.T,
        "size": args.size,
        "date": time.strftime("%Y-%m-%d"),
        "commit": args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }
    only = set(args.only.split(","))
    net = build(lambda: SevaNet(cfg), device, dtype)
    res["params"] = sum(p.numel() for p in net.parameters())
    if "network" in only:
        res["network_eager"] = bench_network(net, cfg, args, device, dtype, compiled=False)
        print(json.dumps(res["network_eager"]), flush=True)
        if args.channels_last:
            net.use_channels_last()
            res["network_eager_channels_last"] = bench_network(net, cfg, args, device, dtype, compiled=False)
            print(json.dumps(res["network_eager_channels_last"]), flush=True)
            net.use_channels_last(False)
        if args.compile:
            res["network_compiled"] = bench_network(net, cfg, args, device, dtype, compiled=True)
            print(json.dumps(res["network_compiled"]), flush=True)
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vae_cfg = dict(SD21_VAE, block_out_channels=[4, 4, 4, 4], norm_num_groups=2, layers_per_block=1) if args.tiny else SD21_VAE
    vae = build(lambda: AutoencoderKL(**vae_cfg), device, torch.float32)
    if "vae" in only:
        res["vae_fp32"] = bench_vae(vae, args, device)
        print(json.dumps(res["vae_fp32"]), flush=True)
    if "window" in only:
        clip_cfg = (
            dict(CLIP_H14, projection_dim=cfg.context_dim)
            if not args.tiny
            else dict(
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                image_size=32,
                patch_size=8,
                projection_dim=64,
            )
        )
        clip = build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)), device, dtype)
        model = SevaModel(net, SevaVAE(vae, chunk=1), ClipConditioner(clip), ["random weights"], {})
        res["window"] = bench_window(model, args, device)
        print(json.dumps(res["window"]), flush=True)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
