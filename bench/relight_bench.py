"""A coupled IC-Light x SEVA relight at the real shapes (random weights, GPU): time and peak memory.

    python bench/relight_bench.py --views 21 --size 576 --steps 50 --out relight.json

Coupled: ``edit_views`` (reference edit, then one SEVA window of 20 targets coupled to 20
IC-Light trajectories). Naive: the same shapes run one after the other -- SEVA novel views from the
reference, then IC-Light on every view separately. Reference anchors (the issue, one H100): SEVA call
0.387 s at batch 42, SD1.5-size UNet call at batch 42 and 72² latents 0.183 s, ~29 s for a naive
eager coupled edit, ~7.6 s bf16 compute limit; goal < 10 s and < 10 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.models import tiny  # noqa: E402
from backend.models.editors.ic_light import ICLight, merge_offsets, widen_conv_in  # noqa: E402
from backend.models.seva import SevaConfig, SevaNet  # noqa: E402
from backend.models.seva.cameras import orbit  # noqa: E402
from backend.models.seva.encoders import ClipConditioner, SevaModel, SevaVAE  # noqa: E402
from backend.pipelines.multiview_edit import EditSettings, EditView, edit_views  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seva_bench import CLIP_H14, SD21_VAE, build  # noqa: E402

SD15_UNET = dict(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD1.5's layout
SD15_TEXT = dict(
    hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408
)


def random_ic_light(device, dtype) -> ICLight:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = build(lambda: UNet2DConditionModel(**SD15_UNET), device, dtype)
    widen_conv_in(unet, 8)
    merge_offsets(unet, {k: torch.zeros_like(v) for k, v in unet.state_dict().items()})
    vae = build(lambda: AutoencoderKL(**dict(SD21_VAE, sample_size=512)), device, torch.bfloat16)
    text = build(lambda: CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), device, dtype)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae, text, tiny.clip_tokenizer(), unet, sched, None, None, requires_safety_checker=False)
    return ICLight(pipe, "fc", device, dtype, ["random weights"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    ap.add_argument("--commit", default=os.environ.get("COMMIT"))
    args = ap.parse_args()
    device, dtype = torch.device(args.device), torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    net = build(lambda: SevaNet(SevaConfig()), device, dtype)
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    seva_vae = build(lambda: AutoencoderKL(**SD21_VAE), device, torch.float32)
    clip = build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_H14)), device, dtype)
    seva = SevaModel(net, SevaVAE(seva_vae), ClipConditioner(clip), ["random weights"], {})
    ic = random_ic_light(device, dtype)
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), args.views).numpy()
    S = args.size
    K = np.array([[S * 1.0, 0, S / 2], [0, S * 1.0, S / 2], [0, 0, 1]])
    rng = np.random.default_rng(0)
    views = [
        EditView(np.dstack([rng.integers(0, 256, (S, S, 3)), np.full((S, S), 255)]).astype(np.float64), K, c2w[i])
        for i in range(args.views)
    ]
    s = EditSettings(prompt="beach sunset lighting", steps=args.steps, T=min(21, args.views), size=S, lam=0.015)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"))

    edit_views(seva, ic, views, 0, EditSettings(**(s.__dict__ | {"steps": 2})))  # warm-up
    coupled_s, coupled_gib = timed(lambda: edit_views(seva, ic, views, 0, s))

    def naive():
        from backend.pipelines.novel_views import NovelViewSettings, PosedView, novel_views
        from backend.sampling import sample_coupled

        conds = ic.condition_latents([v.rgba[..., :3] for v in views], [v.rgba[..., 3] / 255 for v in views])
        ref = ic.decode(sample_coupled([ic.participant("e", conds[:1], s.prompt, s.steps)], step="ddpm").latents["e"])[0].cpu()
        novel_views(
            seva,
            [PosedView(torch.tensor(c2w[0]), torch.tensor(K), S, S, ref)],
            [PosedView(torch.tensor(c2w[i]), torch.tensor(K), S, S) for i in range(1, len(views))],
            NovelViewSettings(steps=s.steps, T=s.T, size=S),
        )
        for i in range(1, len(views)):
            ic.decode(sample_coupled([ic.participant("e", conds[i : i + 1], s.prompt, s.steps)], step="ddpm").latents["e"])

    naive_s, naive_gib = timed(naive)
    res = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "views": args.views,
        "size": S,
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d"),
        "commit": args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "coupled": {"s": coupled_s, "peak_gib": coupled_gib},
        "naive_sequential": {"s": naive_s, "peak_gib": naive_gib},
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
