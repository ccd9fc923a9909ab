"""Train the toy multi-view model: SevaNet (T = 8) with SEVA's objective and conditioning.

    python train/train_seva.py --vae outputs/toy_models/vae-toy --out outputs/toy_models --minutes 6

Each sample is a window of 8 views of one toy scene under one light: arcs (turntable-like) or
scattered cameras. 1-3 random slots are inputs: their clean latents replace the noisy ones and the
mask channel marks them; every frame gets its Plücker map from ``window_cameras`` (the function
inference uses) and the mean CLIP embedding of the inputs (a frozen random small CLIP vision model,
shipped with the weights). One discrete SEVA timestep per window; epsilon loss on the target slots,
weighted by ``--weighting`` (see ``loss_weights``); 10 % of windows unconditional (no context, no mask, no replacement), as SEVA's
unconditional branch is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from common import Budget, LossLog, autocast, compiled, frozen_vae, half_state, pack, parser, save_card, start

from backend.models.seva.cameras import normalise_pixel_K, window_cameras
from backend.models.seva.encoders import ClipConditioner
from backend.models.seva.network import SevaConfig, SevaNet
from backend.models.seva.sampling import SIGMA_TABLE
from backend.toyworld import data

T = 8
# 64 channels at every level: SevaNet's GroupNorms have 32 groups, so 32 channels make each one an
# instance norm that erases every channel's spatial mean -- the network then cannot return the mean of
# the noise it is given (its epsilon error kept a floor of 1/(16*16), the variance of a 16x16 noise
# mean, which sigma 85 turns into latents 5 off: SEVA's far views came out as coloured noise).
SEVA_CONFIG = dict(model_channels=64, num_frames=T, channel_mult=[1, 1, 1, 1], num_head_channels=32, context_dim=64)
CLIP_CONFIG = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8, projection_dim=64
)


def toy_clip(seed: int = 5):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG)).eval().requires_grad_(False)


def input_slots(b: int, n_cond: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(b, T) bool: ``n_cond[i]`` random input slots per window."""
    mask = torch.zeros(b, T, dtype=torch.bool)
    for i in range(b):
        mask[i, torch.randperm(T, generator=g)[: int(n_cond[i])]] = True
    return mask


def loss_weights(sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-window weights of the epsilon MSE.

    ``min-snr``: min(SNR, 5) / SNR (min-SNR-5 in epsilon form): every sigma above 0.45 weighs 1, so at
    SEVA's high noise levels (sigma up to 85) the x0 error, sigma^2 times the epsilon error, is barely
    trained (session 5's model: its conditional and unconditional x0 at sigma 5-14 were within 0.8 dB
    of each other on two held-out scenes). ``x0-mid``: that, times clamp(sigma^2, 1, 25): an x0 loss of
    weight 1 for sigma in 1..5 and 25 / sigma^2 above, where the layout comes from the input views;
    divided by its mean over the uniform timestep draw so the learning rate keeps its meaning. The
    shipped 64-channel model was trained with it; its effect apart from the new config is unmeasured.
    ``edm``: (1 + sigma^2), normalised: the x0 error weighs the same at every high sigma. Tried once
    (session 7, CPU, 150 steps of batch 8 continuing the shipped model): the x0 error at sigma 85 rose
    6.4 -> 10.7 against 7.0 for x0-mid under the same fine-tune; untried from scratch (train/README.md).
    """
    table = SIGMA_TABLE.to(sigma.device)
    if kind == "edm":  # EDM's weighting in epsilon form (sigma_data 1): the x0 error weighs about 1 at every high sigma
        return (1 + sigma**2) / (1 + table**2).mean()
    w = torch.clamp(1 / sigma**2, max=5.0) * sigma**2
    if kind == "min-snr":
        return w
    if kind != "x0-mid":
        raise ValueError(f"unknown weighting {kind!r}")
    mean = (torch.clamp(1 / table**2, max=5.0) * table**2 * torch.clamp(table**2, 1, 25)).mean()
    return w * torch.clamp(sigma**2, 1, 25) / mean


def plucker_maps(w: data.Windows) -> torch.Tensor:
    """(b, T, 6, h, w) Plücker maps of each window, normalised as inference does (``window_cameras``)."""
    H, W = w.images.shape[-2:]
    out = []
    for i in range(len(w.c2w)):
        K = torch.stack([normalise_pixel_K(k, W, H) for k in w.K[i]])
        out.append(window_cameras(w.c2w[i], K, w.c2w[i], (H, W), 2.0).plucker)
    return torch.stack(out)


@torch.no_grad()
def encode_windows(w: data.Windows, vae, conditioner: ClipConditioner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents (n, T, 4, h, w), CLIP embeddings (n, T, 64) and Plücker maps (n, T, 6, h, w) of rendered windows."""
    n = len(w.images)
    x = w.images.flatten(0, 1) * 2 - 1
    z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    emb = conditioner(x)
    return z.view(n, T, *z.shape[1:]), emb.view(n, T, -1), plucker_maps(w).to(z.device)


def network_input(z: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, m: torch.Tensor, plucker: torch.Tensor) -> torch.Tensor:
    """SevaNet's input as SEVA's denoiser builds it: noisy latents with the clean ones in input slots (mask
    ``m`` = 1), scaled by c_in, then the mask and Plücker channels. All per frame: (B*T, ...)."""
    noisy = (z + sigma * eps) * (1 - m) + z * m
    c_in = 1 / torch.sqrt(sigma**2 + 1)
    return torch.cat([noisy * c_in, m.expand(-1, 1, *z.shape[-2:]), plucker], 1)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--vae", default="outputs/toy_models/vae-toy")
    ap.add_argument("--weighting", default="x0-mid", choices=["x0-mid", "min-snr", "edm"], help="epsilon-loss weights per noise level")
    args = ap.parse_args()
    g = start(args, 3)
    dev = args.device
    vae = frozen_vae(args.vae, dev)
    clip = toy_clip().to(dev)
    conditioner = ClipConditioner(clip)
    net = SevaNet(SevaConfig(**SEVA_CONFIG))
    if args.init:
        from safetensors.torch import load_file

        net.load_state_dict({k: v.float() for k, v in load_file(f"{args.init}/model.safetensors").items()})
    net = net.to(dev).train()
    step_net = compiled(net, args)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    table = SIGMA_TABLE.to(dev)
    budget, log = Budget(args.minutes, args.max_steps, args.lr), LossLog(every=100 if dev != "cpu" else 5)
    b = args.batch

    def fresh(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return encode_windows(data.windows(n, T, g, device=dev), vae, conditioner)

    cache = None
    if args.cache:  # a fixed set of windows, drawn from at random (no rendering in the loop)
        parts = [fresh(min(16, args.cache - i)) for i in range(0, args.cache, 16)]
        cache = tuple(torch.cat(x) for x in zip(*parts, strict=True))
        print(f"cached {len(cache[0])} windows", flush=True)
    while budget.next():
        if cache is not None:
            pick = torch.randint(0, len(cache[0]), (b,), generator=g)
            z, emb, plucker = cache[0][pick].flatten(0, 1), cache[1][pick], cache[2][pick].flatten(0, 1)
        elif (budget.step - 1) % args.reuse == 0:
            z, emb, plucker = fresh(b)
            z, plucker = z.flatten(0, 1), plucker.flatten(0, 1)
        n_cond = torch.randint(1, 4, (b,), generator=g)
        mask = input_slots(b, n_cond, g).to(dev)
        uncond = (torch.rand(b, generator=g) < 0.1).to(dev)
        ctx = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        ctx = torch.where(uncond[:, None], torch.zeros_like(ctx), ctx)
        idx = torch.randint(0, 1000, (b,), device=dev)
        sigma = table[idx].repeat_interleave(T).view(-1, 1, 1, 1)
        eps = torch.randn_like(z)
        m = (mask & ~uncond[:, None]).flatten().float().view(-1, 1, 1, 1)
        net_in = network_input(z, eps, sigma, m, plucker)
        with autocast(dev):
            pred = step_net(net_in, idx.repeat_interleave(T), ctx.repeat_interleave(T, 0)[:, None], plucker, T).float()
        weight = loss_weights(sigma.flatten(), args.weighting) * (1 - m.flatten())
        mse = F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * mse).sum() / (1 - m.flatten()).sum()
        for group in opt.param_groups:
            group["lr"] = budget.rate()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        log.add(budget.step, loss=loss.item(), mse=(mse * (1 - m.flatten())).sum().item() / (1 - m.flatten()).sum().item())
    folder = Path(args.out) / "seva-toy"
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(half_state(net), str(folder / "model.safetensors"))
    (folder / "seva_config.json").write_text(json.dumps({"seva_params": SevaConfig(**SEVA_CONFIG).to_dict()}, indent=1))
    clip.to(torch.float16).save_pretrained(folder / "clip", safe_serialization=True)
    body = {
        "architecture": f"SevaNet {SEVA_CONFIG} (the SEVA network's code, small config) + a frozen random CLIP vision model "
        f"({CLIP_CONFIG}) as image conditioner, with vae-toy as autoencoder",
        "data": "windows of 8 views of one random toy scene under one light (vocabulary or random sun), turntable arcs or "
        "scattered cameras at 3.2-4.8 m, 1-3 input slots",
        "script": "train_seva.py",
        "limits": "T = 8 only; toy scenes on grey at 128 px; cameras looking at the scene centre",
    }
    save_card(folder, "seva-toy", body, log, budget, args)
    pack(folder, args.pack)
    print(f"seva-toy: {budget.step} steps")


if __name__ == "__main__":
    main()
