"""Train the toy relighting editor in IC-Light fc form: SD-style UNet with the source view's latent
concatenated (8 input channels) and a small CLIP text encoder trained on light prompts.

    python train/train_editor.py --vae outputs/toy_models/vae-toy --out outputs/toy_models --minutes 6

Pairs: a random toy view under some light (condition, on grey, latent = VAE mode x scale of
pixels/127 - 1 as IC-Light encodes it) and the same view under the light a vocabulary prompt means
for that camera (target). Epsilon objective on SD's 1000-step scaled-linear schedule, min-SNR-5
weights; 10 % of prompts dropped to "" or IC-Light's default negative so guidance works.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from common import Budget, LossLog, autocast, compiled, frozen_vae, pack, parser, save_card, start

from backend.models.editors.ic_light import DEFAULT_NEGATIVE
from backend.toyworld import data

UNET_CONFIG = dict(
    block_out_channels=(64, 96, 128),
    layers_per_block=1,
    sample_size=16,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=8,
    norm_num_groups=32,
)
TEXT_CONFIG = dict(
    bos_token_id=512,
    eos_token_id=513,
    pad_token_id=513,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=514,
    max_position_embeddings=77,
    projection_dim=64,
)


def main() -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.models import tiny

    ap = parser(__doc__)
    ap.add_argument("--vae", default="outputs/toy_models/vae-toy")
    args = ap.parse_args()
    g = start(args, 2)
    rng = random.Random(args.seed)
    dev = args.device
    vae = frozen_vae(args.vae, dev)
    sf = vae.config.scaling_factor
    if args.init:
        unet = UNet2DConditionModel.from_pretrained(args.init, subfolder="unet", torch_dtype=torch.float32).to(dev).train()
        text = CLIPTextModel.from_pretrained(f"{args.init}/text_encoder", torch_dtype=torch.float32).to(dev).train()
    else:
        unet = UNet2DConditionModel(**UNET_CONFIG).to(dev).train()
        text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)).to(dev).train()
    tok = tiny.clip_tokenizer()
    sched = tiny.sd_scheduler()
    ab = sched.alphas_cumprod.to(dev)
    step_unet = compiled(unet, args)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    budget, log = Budget(args.minutes, args.max_steps, args.lr), LossLog(every=100 if dev != "cpu" else 5)

    def encode(img: torch.Tensor) -> torch.Tensor:
        return vae.encode(img * 255 / 127 - 1).latent_dist.mode() * sf

    def fresh(n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        pairs = data.relight_pairs(n, g, device=dev)
        with torch.no_grad():
            return encode(pairs.source), encode(pairs.target), pairs.prompts

    cache = None
    if args.cache:  # latents of a fixed set of pairs, drawn from at random (no rendering in the loop)
        parts = [fresh(min(64, args.cache - i)) for i in range(0, args.cache, 64)]
        cache = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), [t for p in parts for t in p[2]])
        print(f"cached {len(cache[2])} pairs", flush=True)
    while budget.next():
        if cache is not None:
            pick = torch.randint(0, len(cache[2]), (args.batch,), generator=g)
            cond, x0, texts0 = cache[0][pick], cache[1][pick], [cache[2][int(i)] for i in pick]
        elif (budget.step - 1) % args.reuse == 0:
            cond, x0, texts0 = fresh(args.batch)
        texts = [p if rng.random() > 0.1 else rng.choice(["", DEFAULT_NEGATIVE]) for p in texts0]
        ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(dev)
        t = torch.randint(0, 1000, (args.batch,), device=dev)
        eps = torch.randn_like(x0)
        a = ab[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with autocast(dev):
            ctx = text(ids).last_hidden_state
            pred = step_unet(torch.cat([noisy, cond], 1), t, encoder_hidden_states=ctx).sample.float()
        snr = ab[t] / (1 - ab[t])
        w = torch.clamp(snr, max=5.0) / snr
        mse = F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))
        loss = (w * mse).mean()
        for group in opt.param_groups:
            group["lr"] = budget.rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.add(budget.step, loss=loss.item(), mse=mse.mean().item())
    save(Path(args.out) / "ic-light-toy", unet, text, tok, sched, vae)
    folder = Path(args.out) / "ic-light-toy"
    body = {
        "architecture": f"diffusers UNet2DConditionModel {UNET_CONFIG['block_out_channels']} with 8 input channels (IC-Light fc: "
        "noisy latent | condition latent), transformers CLIPTextModel 64-d x 2 layers, character-level CLIP tokenizer",
        "data": "pairs of one random toy view under a random or vocabulary light and under the light a prompt "
        "'<colour> light from the <direction>' means for that camera (6 colours x 5 directions, jittered)",
        "script": "train_editor.py",
        "vae": "vae-toy (loaded beside it; not stored twice)",
        "limits": "knows only the 30 vocabulary prompts; relights toy renders on grey only; 128 px",
    }
    save_card(folder, "ic-light-toy", body, log, budget, args)
    pack(folder, args.pack)
    print(f"ic-light-toy: {budget.step} steps")


def save(folder: Path, unet, text, tok, sched, vae) -> None:
    """A diffusers StableDiffusionPipeline folder without its VAE (vae-toy is loaded beside it)."""
    import json

    unet.to(torch.float16).save_pretrained(folder / "unet", safe_serialization=True)
    text.to(torch.float16).save_pretrained(folder / "text_encoder", safe_serialization=True)
    tok.save_pretrained(folder / "tokenizer")
    sched.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


if __name__ == "__main__":
    main()
