"""Random weights at the real shapes, written in the official layouts, so jobs load them with the real
loaders (models.paths): SEVA 1.1 (model.safetensors) + SD 2.1 VAE + CLIP ViT-H/14 vision, and
IC-Light fc (an SD1.5 diffusers folder + a conv_in-widened offsets file). Benchmarks only: the
pictures are noise, and every job made with them says nothing about quality.

    python bench/random_weights.py /tmp/rw               # real shapes (GPU machine: ~6 GB on disk)
    python bench/random_weights.py /tmp/rw --small       # the same layouts with tiny networks (CPU check)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from relight_bench import SD15_TEXT, SD15_UNET  # noqa: E402
from seva_bench import CLIP_H14, SD21_VAE, build  # noqa: E402


def write_random_weights(folder: Path, small: bool = False, device: str = "cpu") -> dict:
    """Writes the files (once: an existing ``models.json`` is reused) and returns the job spec's
    ``models`` section that loads them."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from backend.models import tiny
    from backend.models.editors.ic_light import widen_conv_in
    from backend.models.seva import SevaConfig, SevaNet
    from backend.models.seva.encoders import tiny_seva_config

    done = folder / "models.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    dt = torch.bfloat16 if device != "cpu" else torch.float32
    cfg = tiny_seva_config() if small else SevaConfig()
    net = build(lambda: SevaNet(cfg), device, dt)
    (folder / "seva").mkdir(exist_ok=True)
    state = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "seva/model.safetensors"))
    (folder / "seva/seva_config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    del net
    vae = tiny.sd_vae(1) if small else build(lambda: AutoencoderKL(**SD21_VAE), device, torch.float32)
    vae.save_pretrained(folder / "seva-vae")
    clip_cfg = dict(CLIP_H14) if not small else dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                                                       image_size=32, patch_size=8, projection_dim=cfg.context_dim)  # fmt: skip
    build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)), device, dt).save_pretrained(folder / "seva-clip")
    if small:
        parts = tiny.sd_components(3)
    else:
        parts = dict(
            unet=build(lambda: UNet2DConditionModel(**SD15_UNET), device, dt),
            vae=build(lambda: AutoencoderKL(**dict(SD21_VAE, sample_size=512)), device, dt),
            text_encoder=build(lambda: CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), device, dt),
            tokenizer=tiny.clip_tokenizer(),
            scheduler=DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    pipe = StableDiffusionPipeline(**parts)
    pipe.save_pretrained(folder / "sd15")
    widen_conv_in(pipe.unet, 8)  # IC-Light fc's offsets cover the widened UNet's every tensor
    offsets = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in pipe.unet.state_dict().items()}
    save_file(offsets, str(folder / "iclight_sd15_fc.safetensors"))
    models = {
        "multiview": "seva-1.1",
        "editor": "ic-light-fc",
        "paths": {
            "seva-1.1": str(folder / "seva/model.safetensors"),
            "seva-vae": str(folder / "seva-vae"),
            "seva-clip": str(folder / "seva-clip"),
            "ic-light-base": str(folder / "sd15"),
            "ic-light-fc": str(folder / "iclight_sd15_fc.safetensors"),
        },
    }
    done.write_text(json.dumps(models, indent=1))
    return models


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    print(json.dumps(write_random_weights(Path(a.folder), a.small, a.device), indent=1))
