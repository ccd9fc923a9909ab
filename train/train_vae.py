"""Train the toy VAE: diffusers AutoencoderKL in the kl-f8 layout (4 blocks), 128 px -> 16x16x4 latents.

    python train/train_vae.py --out outputs/toy_models --minutes 3

Loss: L1 + image-gradient L1 on reconstructions from posterior samples, KL 1e-6. The scaling
factor written to the config makes scaled latents unit-variance (SEVA and IC-Light multiply by it).

``--init vae-toy --decoder-only`` trains the decoder alone: the encoder, and so the latent space the
editor and SEVA were trained in (scaling factor included), stays exactly as it was; only how latents
are decoded changes (tried in session 8, not kept: train/README.md). ``--cache N`` renders N views once
(the CPU's way).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from common import Budget, LossLog, autocast, pack, parser, save_card, start

from backend.toyworld import data

VAE_CONFIG = dict(
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=128,
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
)


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def main() -> None:
    from diffusers import AutoencoderKL

    ap = parser(__doc__)
    ap.add_argument("--sample-latents", dest="mean_latents", action="store_false", help="decode posterior samples instead of the mean")
    ap.add_argument("--clip", type=float, default=10.0, help="gradient norm clip")
    ap.add_argument("--decoder-only", action="store_true", help="with --init: train the decoder alone (latent space unchanged)")
    args = ap.parse_args()
    if args.decoder_only and not args.init:
        raise SystemExit("--decoder-only continues a trained VAE: give it with --init")
    g = start(args, 1)
    if args.init:
        vae = AutoencoderKL.from_pretrained(args.init, torch_dtype=torch.float32).to(args.device).train()
    else:
        vae = AutoencoderKL(**VAE_CONFIG).to(args.device).train()
    if args.decoder_only:
        vae.encoder.requires_grad_(False).eval()
        vae.quant_conv.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    budget, log = Budget(args.minutes, args.max_steps, args.lr), LossLog(every=100 if args.device != "cpu" else 5)
    cache = None
    if args.cache:  # a fixed set of views, drawn from at random and mirrored (no rendering in the loop)
        cache = torch.cat([data.views(min(64, args.cache - i), g, device=args.device) * 2 - 1 for i in range(0, args.cache, 64)])
        print(f"cached {len(cache)} views", flush=True)
    while budget.next():
        if cache is not None:
            x = cache[torch.randint(0, len(cache), (args.batch,), generator=g)]
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=g).to(x.device) < 0.5, x.flip(-1), x)
        elif (budget.step - 1) % args.reuse == 0:
            x = data.views(args.batch, g, device=args.device) * 2 - 1
        with autocast(args.device):
            with torch.set_grad_enabled(not args.decoder_only):
                post = vae.encode(x).latent_dist
            # decode the posterior mean (the pipelines encode with the mean/mode): sampling with the
            # initial unit variance drowned colour in a first run (decoded views came out grey)
            rec = vae.decode(post.mean if args.mean_latents else post.sample()).sample.float()
        l1 = (rec - x).abs().mean() + F.mse_loss(rec, x)
        grad = sum((a - b).abs().mean() for a, b in zip(gradients(rec), gradients(x), strict=True))
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + 0.5 * grad + (0.0 if args.decoder_only else 1e-6 * kl * x[0].numel())
        for group in opt.param_groups:
            group["lr"] = budget.rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, args.clip)
        opt.step()
        log.add(
            budget.step, rec=l1.item(), grad=grad.item(), kl=kl.item(), psnr=(-10 * torch.log10(F.mse_loss(rec.detach(), x) / 4)).item()
        )
    vae.eval()
    with torch.no_grad():
        x = torch.cat([data.views(64, g, device=args.device) * 2 - 1 for _ in range(4)])
        z = torch.cat([vae.encode(x[i : i + 64]).latent_dist.mean for i in range(0, len(x), 64)])
        scale = float(1.0 / z.float().std())
        if args.decoder_only or (args.init and budget.step <= 1):  # keep the scale the editor and SEVA were trained with
            scale = float(vae.config.scaling_factor)
        rec = torch.cat([vae.decode(z[i : i + 64]).sample.float() for i in range(0, len(x), 64)])
        psnr = float(-10 * torch.log10(F.mse_loss(rec, x) / 4))
    vae.register_to_config(scaling_factor=round(scale, 5))
    folder = Path(args.out) / "vae-toy"
    vae.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    body = {
        "architecture": f"diffusers AutoencoderKL {VAE_CONFIG['block_out_channels']}, 1 layer per block, 4 latent channels, x8",
        "data": "single 128 px views of random toy scenes, half under vocabulary lights, half under random suns",
        "script": "train_vae.py",
        "held_out_psnr_db": round(psnr, 2),
        "scaling_factor": round(scale, 5),
        "limits": "blurs fine texture (the toy world has none); trained on toy renders only",
    }
    save_card(folder, "vae-toy", body, log, budget, args)
    pack(folder, args.pack)
    print(f"vae-toy: PSNR {psnr:.2f} dB on 256 held-out views, scaling factor {scale:.4f}, {budget.step} steps")


if __name__ == "__main__":
    main()
