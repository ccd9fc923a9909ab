"""Seconds per coupled step vs uncoupled steps at real model shapes (random weights, GPU).

Random weights run at the same speed as real ones, so this measures what a user waits for.
For two prompts it times, per denoising step:
  uncoupled x2  - each prompt sampled alone (batch 1), the two runs' times added;
  coupled       - both prompts as one participant (batch 2, one network call), coupled;
  coupled-split - two participants of batch 1 coupled to each other (two calls per step).
Peak memory is torch.cuda.max_memory_allocated over each variant.

    python bench/coupled_step.py --model flux-dev --size 1024 --steps 4 --out result.json
    python bench/coupled_step.py --model wan-1.3b --steps 3
    python bench/coupled_step.py --model flux-tiny --device cpu   # plumbing check without a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.models import tiny  # noqa: E402
from backend.pipelines.coupled_t2i import flux_velocity  # noqa: E402
from backend.sampling import Coupling, FlowDenoiser, Participant, sample_coupled, schedules  # noqa: E402

# Published transformer configs (research/editors.md §5)
FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)
FLUX_TINY = tiny.FLUX_TRANSFORMER
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)


def build(cls, config: dict, device: torch.device, dtype: torch.dtype):
    """Random weights created directly on the device in the target dtype (no fp32 copy)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(old)
    return model.eval().requires_grad_(False)


def flux_setup(args, device, dtype):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    cfg = dict(FLUX_TINY if args.model == "flux-tiny" else FLUX_CONFIG, guidance_embeds=args.model == "flux-dev")
    transformer = build(FluxTransformer2DModel, cfg, device, dtype)
    c = cfg["in_channels"] // 4
    h = w = 2 * (args.size // 16)
    seq = (h // 2) * (w // 2)
    txt_len = 512 if args.model == "flux-dev" else 256
    if args.model == "flux-tiny":
        txt_len = 16
    gen = torch.Generator(device="cpu").manual_seed(0)
    embeds = torch.randn(2, txt_len, cfg["joint_attention_dim"], generator=gen).to(device, dtype)
    pooled = torch.randn(2, cfg["pooled_projection_dim"], generator=gen).to(device, dtype)
    text_ids = torch.zeros(txt_len, 3, device=device, dtype=dtype)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)
    mu = schedules.flux_mu(seq)
    sigmas = schedules.flow_schedule(args.steps, mu=mu) if args.model == "flux-dev" else schedules.flow_schedule(args.steps)

    def participant(name: str, items: list[int]) -> Participant:
        g = torch.full((len(items),), 3.5, device=device) if cfg["guidance_embeds"] else None
        v = flux_velocity(transformer, dtype, embeds[items], pooled[items], text_ids, img_ids, g)
        return Participant(name, FlowDenoiser(v), (len(items), seq, 4 * c), sigmas=sigmas, seeds=items, device=device)

    shape = {"tokens_image": seq, "tokens_text": txt_len, "latent": [c, h, w]}
    return transformer, participant, shape


WAN_TINY = dict(tiny.WAN_TRANSFORMER, rope_max_seq_len=1024)


def wan_setup(args, device, dtype):
    from diffusers import WanTransformer3DModel

    cfg = WAN_TINY if args.model == "wan-tiny" else WAN_1_3B
    transformer = build(WanTransformer3DModel, cfg, device, dtype)
    f = (args.frames - 1) // 4 + 1
    h, w = args.height // 8, args.width // 8
    gen = torch.Generator(device="cpu").manual_seed(0)
    cond = torch.randn(2, 512, cfg["text_dim"], generator=gen).to(device, dtype)
    uncond = torch.randn(2, 512, cfg["text_dim"], generator=gen).to(device, dtype)
    sigmas = schedules.flow_schedule(args.steps, shift=3.0)

    def participant(name: str, items: list[int]) -> Participant:
        def v(x_fm, s):
            t = s * 1000.0
            with torch.no_grad():
                vc = transformer(hidden_states=x_fm.to(dtype), timestep=t, encoder_hidden_states=cond[items], return_dict=False)[0].float()
                vu = transformer(hidden_states=x_fm.to(dtype), timestep=t, encoder_hidden_states=uncond[items], return_dict=False)[
                    0
                ].float()
            return vu + 5.0 * (vc - vu)

        return Participant(name, FlowDenoiser(v), (len(items), 16, f, h, w), sigmas=sigmas, seeds=items, device=device)

    shape = {"tokens_video": f * (h // 2) * (w // 2), "latent": [16, f, h, w], "cfg": 5.0}
    return transformer, participant, shape


def timed(fn, device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return time.perf_counter() - t0, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="flux-dev", choices=["flux-dev", "flux-schnell", "flux-tiny", "wan-1.3b", "wan-tiny"])
    ap.add_argument("--size", type=int, default=1024, help="Flux image side in pixels")
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lam", type=float, default=0.3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--commit", default=os.environ.get("COMMIT"), help="recorded with the figures (default: git HEAD)")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    setup = wan_setup if args.model.startswith("wan") else flux_setup
    t_build = time.perf_counter()
    transformer, participant, shape = setup(args, device, dtype)
    build_s = time.perf_counter() - t_build
    params = sum(p.numel() for p in transformer.parameters())

    def uncoupled():
        sample_coupled([participant("a", [0])], step="euler")
        sample_coupled([participant("b", [1])], step="euler")

    def coupled_batched():
        p = participant("ab", [0, 1])
        sample_coupled([p], [Coupling("ab", "ab", args.lam, items_a=[0], items_b=[1])], step="euler")

    def coupled_split():
        sample_coupled([participant("a", [0]), participant("b", [1])], [Coupling("a", "b", args.lam)], step="euler")

    variants = {"uncoupled_x2": uncoupled, "coupled_batched": coupled_batched, "coupled_split": coupled_split}
    for fn in variants.values():  # warm-up: kernels, allocator, autotuning
        fn()
    results = {}
    for name, fn in variants.items():
        secs, peak = timed(fn, device)
        results[name] = {"s_per_step": secs / args.steps, "total_s": secs, "peak_gib": peak}
    info = {
        "model": args.model,
        "params_b": params / 1e9,
        "dtype": args.dtype,
        "steps": args.steps,
        "lam": args.lam,
        "shape": shape,
        "size": args.size if args.model.startswith("flux") else [args.width, args.height, args.frames],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "build_s": build_s,
        "date": time.strftime("%Y-%m-%d"),
        "commit": args.commit
        or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        or "unknown",
        "results": results,
        "coupling_overhead_vs_uncoupled": results["coupled_batched"]["s_per_step"] / results["uncoupled_x2"]["s_per_step"] - 1,
    }
    text = json.dumps(info, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
