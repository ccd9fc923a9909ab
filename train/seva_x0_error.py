"""How good the toy SEVA's x0 estimate is at each noise level, against two trivial predictors.

    python train/seva_x0_error.py --model backend/toy_models/seva-toy --windows 48

Fresh toy windows (8 views, 1 input slot), one forward per sigma; the x0 estimate
is SEVA's denoiser output x - sigma * eps_pred. Baselines: each window's channel means (``means``) and
a copy of the input view in every slot (``copy``). Where the network's error is above them it adds
nothing but noise at that sigma: the first sampling steps then commit to a wrong layout (train/README.md).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from common import frozen_vae
from safetensors.torch import load_file
from train_seva import SEVA_CONFIG, T, encode_windows, input_slots, network_input, toy_clip

from backend.models.seva.encoders import ClipConditioner
from backend.models.seva.network import SevaConfig, SevaNet
from backend.models.seva.sampling import SIGMA_TABLE
from backend.toyworld import data

INDICES = (100, 400, 700, 900, 999)  # sigma 0.91, 6.4, 19.9, 48.6, 84.9


@torch.no_grad()
def x0_errors(model: str, vae_path: str, windows: int, seed: int) -> dict[str, float]:
    vae = frozen_vae(vae_path, "cpu")
    net = SevaNet(SevaConfig(**SEVA_CONFIG)).eval()
    net.load_state_dict({k: v.float() for k, v in load_file(f"{model}/model.safetensors").items()})
    g = torch.Generator().manual_seed(seed)
    zt, emb, plucker = encode_windows(data.windows(windows, T, g), vae, ClipConditioner(toy_clip()))
    z, plucker = zt.flatten(0, 1), plucker.flatten(0, 1)
    mask = input_slots(windows, torch.ones(windows, dtype=torch.long), g)
    ctx = ((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).repeat_interleave(T, 0)[:, None]
    m = mask.flatten().float().view(-1, 1, 1, 1)
    targets = ~mask.flatten()
    out = {}
    for i in INDICES:
        sigma = SIGMA_TABLE[i]
        eps = torch.randn(z.shape, generator=g)
        pred = net(network_input(z, eps, sigma, m, plucker), torch.full((len(z),), i), ctx, plucker, T)
        x0 = (z + sigma * eps) - sigma * pred  # the denoiser's output D = x - sigma * eps_pred on the target slots
        out[f"sigma {sigma:.3g}"] = F.mse_loss(x0, z, reduction="none")[targets].mean().item()
    out["means"] = ((zt - zt.mean(dim=(1, 3, 4), keepdim=True)) ** 2).flatten(0, 1)[targets].mean().item()
    given = zt[mask].repeat_interleave(T, 0).view_as(zt)  # one input slot per window
    out["copy"] = ((zt - given) ** 2).flatten(0, 1)[targets].mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="backend/toy_models/seva-toy")
    ap.add_argument("--vae", default="backend/toy_models/vae-toy")
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--seed", type=int, default=12345, help="data seed (windows other than training's)")
    a = ap.parse_args()
    torch.manual_seed(0)
    print(json.dumps({k: round(v, 4) for k, v in x0_errors(a.model, a.vae, a.windows, a.seed).items()}))


if __name__ == "__main__":
    main()
