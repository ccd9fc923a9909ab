"""Coupled multi-view edits at the real shapes (random weights, GPU): time and peak memory.

    python bench/relight_bench.py --editor iclight --views 21 --size 576 --steps 50 --naive --out relight.json
    python bench/relight_bench.py --editor controlnet ...     # SD1.5 + one depth ControlNet, img2img 0.75
    python bench/relight_bench.py --editor gaffer ...         # Neural Gaffer at 256² on object crops
    python bench/relight_bench.py --alignment sigma | --compile

Coupled: ``edit_views`` (reference edit, then one SEVA window of 20 targets coupled to 20 editor
trajectories). ``--naive``: the same shapes one after the other -- SEVA novel views from the
reference, then the editor on every view separately. Reference anchors (the issue, one H100): SEVA
call 0.387 s at batch 42, SD1.5-size UNet call at batch 42 and 72² latents 0.183 s, ~29 s for a
naive eager coupled edit, ~7.6 s bf16 compute limit; goal < 10 s and < 10 GiB.
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

from diffusers import UNet2DConditionModel  # noqa: E402

from backend.models import tiny  # noqa: E402
from backend.models.editors.ic_light import ICLight, merge_offsets, widen_conv_in  # noqa: E402
from backend.models.seva import SevaConfig, SevaNet  # noqa: E402
from backend.models.seva.cameras import orbit  # noqa: E402
from backend.models.seva.encoders import ClipConditioner, SevaModel, SevaVAE  # noqa: E402
from backend.pipelines.multiview_edit import EditSettings, EditView, edit_views  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seva_bench import CLIP_H14, SD21_VAE, build  # noqa: E402

SD15_UNET = dict(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD1.5's layout
CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24, image_size=224, patch_size=14,
                projection_dim=768)  # fmt: skip
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
    return ICLight(pipe, device, dtype, ["random weights"], "fc")


def random_controlnet(device, dtype):
    from diffusers import ControlNetModel

    from backend.models.editors.controlnet import ControlNetEditor

    ic = random_ic_light(device, dtype)
    ic.pipe.unet = build(lambda: UNet2DConditionModel(**SD15_UNET), device, dtype)
    net = build(lambda: ControlNetModel(cross_attention_dim=768), device, dtype)
    return ControlNetEditor(ic.pipe, device, dtype, ["random weights"], [net], ["depth"], [1.0], 0.0, 1.0, 0.75)


def random_gaffer(device, dtype):
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from backend.models.editors.neural_gaffer import ZERO123_SCHEDULER, NeuralGaffer

    unet = build(lambda: UNet2DConditionModel(**dict(SD15_UNET, in_channels=16, sample_size=32)), device, dtype)
    vae = build(lambda: AutoencoderKL(**dict(SD21_VAE, sample_size=256)), device, torch.bfloat16)
    enc = build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_L14)), device, dtype)
    return NeuralGaffer(unet, vae, enc, DDIMScheduler(**ZERO123_SCHEDULER), device, dtype, ["random weights"])


def random_fixup(device, dtype):
    from diffusers import AutoencoderKL

    from backend.models.editors import magic_fixup as mf
    from backend.sampling import schedules

    synth = build(lambda: UNet2DConditionModel(**mf.unet_config(mf.FULL_UNET)), device, dtype)
    detail = build(lambda: UNet2DConditionModel(**mf.unet_config(mf.FULL_UNET)), device, dtype)
    vae = build(lambda: AutoencoderKL(**dict(SD21_VAE, sample_size=512)), device, torch.float32)
    ac = schedules.alphas_cumprod_from_betas(schedules.linear_betas(0.00085**0.5, 0.012**0.5) ** 2).float()
    return mf.MagicFixup(synth, detail, vae, ac, ac.sqrt(), (1 - ac).sqrt(), device, dtype, ["random weights"])


def make_views(editor: str, n: int, S: int, c2w: np.ndarray, K: np.ndarray) -> list[EditView]:
    rng = np.random.default_rng(0)
    views = []
    for i in range(n):
        rgba = np.dstack([rng.integers(0, 256, (S, S, 3)), np.full((S, S), 255)]).astype(np.float64)
        v = EditView(rgba, K, c2w[i])
        if editor == "controlnet":
            v.extras = {"depth": rng.random((S, S, 3)).astype(np.float32)}
        if editor == "gaffer":  # the object fills 75 % of the square crop, as the crops of relight_envmap do
            v.rgba[..., 3] = 0
            m = S // 8
            v.rgba[m:-m, m:-m, 3] = 255
            maps = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
            v.conditions = {"hdrn": maps[0], "ldr": maps[1]}
        if editor == "fixup":  # a coarse edit with a hole where an object left
            edit = v.rgba.copy()
            edit[S // 4 : S // 2, S // 4 : S // 2, 3] = 0
            v.extras = {"edit": edit}
        views.append(v)
    return views


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--editor", choices=["iclight", "controlnet", "gaffer", "fixup"], default="iclight")
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--alignment", choices=["step", "sigma"], default="step")
    ap.add_argument("--compile", action="store_true", help="torch.compile SEVA and the editor's UNet (compile time reported apart)")
    ap.add_argument("--naive", action="store_true", help="also time SEVA then the editor per view, one after the other")
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
    builders = {"iclight": random_ic_light, "controlnet": random_controlnet, "gaffer": random_gaffer, "fixup": random_fixup}
    ed = builders[args.editor](device, dtype)
    if args.compile:
        seva.net = torch.compile(seva.net)
        unet = ed.unet if args.editor == "gaffer" else ed.synth if args.editor == "fixup" else ed.pipe.unet
        compiled = torch.compile(unet)
        if args.editor == "gaffer":
            ed.unet = compiled
        else:
            ed.pipe.unet = compiled
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), args.views).numpy()
    S = args.size
    K = np.array([[S * 1.0, 0, S / 2], [0, S * 1.0, S / 2], [0, 0, 1]])
    views = make_views(args.editor, args.views, S, c2w, K)
    cfg = {"iclight": 2.0, "controlnet": 7.5, "gaffer": 3.0, "fixup": 1.0}[args.editor]
    step = "euler" if args.editor == "gaffer" else "ddpm"
    s = EditSettings(prompt="beach sunset lighting", steps=args.steps, T=min(21, args.views), size=S, lam=0.015, cfg_editor=cfg,
                     alignment=args.alignment, step=step)  # fmt: skip

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"))

    warm_s, _ = timed(lambda: edit_views(seva, ed, views, 0, EditSettings(**(s.__dict__ | {"steps": 2}))))  # warm-up (+ compile)
    coupled_s, coupled_gib = timed(lambda: edit_views(seva, ed, views, 0, s))
    res = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "editor": args.editor,
        "alignment": args.alignment,
        "compiled": args.compile,
        "views": args.views,
        "size": S,
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d"),
        "commit": args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "warmup_2_steps_s": warm_s,
        "coupled": {"s": coupled_s, "peak_gib": coupled_gib},
    }
    if args.naive:
        res["naive_sequential"] = dict(zip(("s", "peak_gib"), timed(lambda: naive(seva, ed, views, s, c2w, K, S)), strict=True))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def naive(seva, ed, views, s, c2w, K, S) -> None:
    from backend.pipelines.multiview_edit import _working_views
    from backend.pipelines.novel_views import NovelViewSettings, PosedView, novel_views
    from backend.sampling import sample_coupled

    rgba, extras, _, hw = _working_views(views, s, 0)
    conds = ed.view_conditions(rgba, [e | v.conditions for e, v in zip(extras, views, strict=True)])

    def edit(i):
        p = ed.participant("e", conds[[i]], s.prompt, s.steps, s.cfg_editor, [i])
        return ed.decode(sample_coupled([p], step=s.step).latents["e"])[0].cpu()

    ref = torch.nn.functional.interpolate(edit(0)[None], size=hw, mode="bicubic")[0].clamp(-1, 1)
    novel_views(
        seva,
        [PosedView(torch.tensor(c2w[0]), torch.tensor(K), S, S, ref)],
        [PosedView(torch.tensor(c2w[i]), torch.tensor(K), S, S) for i in range(1, len(views))],
        NovelViewSettings(steps=s.steps, T=s.T, size=S),
    )
    for i in range(1, len(views)):
        edit(i)


if __name__ == "__main__":
    main()
