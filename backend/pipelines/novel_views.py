"""Novel views with SEVA: posed input images + target cameras -> an image for every target.

One pass (``nearest-gt``, the reference CLI's default) or two passes for long trajectories
(anchors with ``gt-nearest``, then ``interp`` between them, the reference demo's orbit path).
Every window: camera normalisation + Plücker, VAE latents and mean CLIP embedding of its
conditioning frames, the reference Euler-EDM sampler with per-frame guidance, decode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..models.seva import chunking
from ..models.seva.cameras import normalise_pixel_K
from ..models.seva.encoders import SevaModel
from ..models.seva.preprocess import transform_img_and_K, transform_K, working_size
from ..models.seva.sampling import SevaDenoiser, sample_euler_edm, seva_schedule, window_conditioning
from ..sampling import Cancelled

Tensor = torch.Tensor


@dataclass
class PosedView:
    """One camera: OpenCV c2w (4x4), pixel K (3x3) for an image of width x height; image in [-1, 1] or None."""

    c2w: Tensor
    K: Tensor
    width: int
    height: int
    image: Tensor | None = None  # (3, H, W)


@dataclass
class NovelViewSettings:
    steps: int = 50
    cfg: float = 2.0
    cfg_min: float = 1.2
    guider: int = 1
    camera_scale: float = 2.0
    T: int = 21
    seed: int = 23
    size: int | tuple[int, int] = 576  # short side (long side to a multiple of 64), or (W, H)
    mode: str = "crop"
    passes: int = 1  # 2: anchors first (orbits, long trajectories)
    strategy: str = ""  # default: nearest-gt (1 pass) / interp (2 passes)


@dataclass
class NovelViews:
    images: list[Tensor]  # per target, (3, H, W) in [-1, 1] at the working size
    size_hw: tuple[int, int]
    metadata: dict = field(default_factory=dict)


@dataclass
class _Pool:
    images: list[Tensor | None]
    c2ws: list[Tensor]
    Ks: list[Tensor]


def prepare(views: Sequence[PosedView], s: NovelViewSettings) -> tuple[list[Tensor | None], list[Tensor], list[Tensor], tuple[int, int]]:
    """Resize/crop every image to the working size and move each K with it (normalised out)."""
    first = views[0]
    H, W = working_size(first.K, (first.height, first.width), s.size, s.mode)
    imgs, c2ws, Ks = [], [], []
    for v in views:
        if v.image is not None:
            img, K = transform_img_and_K(v.image[None].float(), (W, H), v.K[None], s.mode)
            imgs.append(img[0])
        else:
            K, _ = transform_K(v.K[None], (v.height, v.width), (W, H), s.mode)
            imgs.append(None)
        Ks.append(normalise_pixel_K(K[0], W, H))
        c2ws.append(v.c2w.to(torch.float32))
    return imgs, c2ws, Ks, (H, W)


def novel_views(
    model: SevaModel,
    inputs: Sequence[PosedView],
    targets: Sequence[PosedView],
    settings: NovelViewSettings | None = None,
    callback: Callable[[str, int, int], None] | None = None,  # (window label, network calls done, total)
    should_cancel: Callable[[], bool] | None = None,
) -> NovelViews:
    s = settings or NovelViewSettings()
    if not inputs or any(v.image is None for v in inputs):
        raise ValueError("every input view needs an image")
    if not targets:
        raise ValueError("give at least one target camera")
    if s.T <= len(inputs):
        raise ValueError(f"a window of T={s.T} must hold all {len(inputs)} inputs plus targets; raise T or pass fewer inputs")
    t0 = time.perf_counter()
    in_imgs, in_c2w, in_K, hw = prepare(inputs, s)
    _, tg_c2w, tg_K, _ = prepare(targets, s)
    all_c2ws = torch.stack(in_c2w + tg_c2w)
    gen = torch.Generator("cpu").manual_seed(s.seed)
    runner = _WindowRunner(model, s, hw, all_c2ws, gen, callback, should_cancel)
    pool = _Pool(list(in_imgs), list(in_c2w), list(in_K))
    if s.passes == 1:
        chunks = chunking.chunk_input_and_test(s.strategy or "nearest-gt", s.T, torch.stack(in_c2w), torch.stack(tg_c2w))
        runner.total = len(chunks) * s.steps
        results = runner.run(chunks, pool, tg_c2w, tg_K, grow_pool=False, label="pass 1")
        plan_meta = {"strategy": s.strategy or "nearest-gt", "windows": len(chunks)}
    else:
        plan = chunking.plan_two_pass(
            torch.stack(in_c2w), torch.stack(tg_c2w), s.T, s.strategy or "interp", {"chunk_strategy": s.strategy or "interp"}
        )
        runner.total = (len(plan.first_pass) + len(plan.second_pass)) * s.steps
        an_c2w = [all_c2ws[i] for i in plan.anchor_indices]
        all_K = in_K + tg_K
        an_K = [all_K[i] for i in plan.anchor_indices]
        anchors = runner.run(plan.first_pass, pool, an_c2w, an_K, grow_pool=True, label="anchors")
        merged = _Pool(list(in_imgs) + [anchors[i] for i in range(len(an_c2w))], list(in_c2w) + an_c2w, list(in_K) + an_K)
        sorted_pool = _Pool(*[[lst[i] for i in plan.pool_argsort] for lst in (merged.images, merged.c2ws, merged.Ks)])
        results = runner.run(plan.second_pass, sorted_pool, tg_c2w, tg_K, grow_pool=False, label="pass 2")
        plan_meta = {"anchors": plan.num_anchors, "windows": [len(plan.first_pass), len(plan.second_pass)], "T": plan.T}
    images = [results[j] for j in range(len(targets))]
    meta = {
        "settings": s.__dict__ | {"size": list(s.size) if isinstance(s.size, tuple) else s.size},
        "working_size_hw": list(hw),
        "plan": plan_meta,
        "network_calls": runner.calls,
        "timings_s": {"total": time.perf_counter() - t0, "sampling": runner.sample_s, "vae": runner.vae_s},
        "labels": model.labels,
        "sources": model.sources,
    }
    return NovelViews(images, hw, meta)


class _WindowRunner:
    def __init__(self, model: SevaModel, s: NovelViewSettings, hw, all_c2ws, gen, callback, should_cancel) -> None:
        self.model, self.s, self.hw, self.all_c2ws, self.gen = model, s, hw, all_c2ws, gen
        self.callback, self.should_cancel = callback, should_cancel
        self.denoiser = SevaDenoiser(model.net)
        self.sigmas = seva_schedule(s.steps)
        self.calls, self.sample_s, self.vae_s, self.total = 0, 0.0, 0.0, 0

    def run(self, chunks, pool: _Pool, tg_c2w, tg_K, grow_pool: bool, label: str) -> dict[int, Tensor]:
        results: dict[int, Tensor] = {}
        n_inputs = len(pool.images)
        for w, chunk in enumerate(chunks):
            lay = chunking.window_layout(chunk)
            c2ws = torch.stack(lay.gather(pool.c2ws, tg_c2w))
            Ks = torch.stack(lay.gather(pool.Ks, tg_K))
            cond_imgs = torch.stack([pool.images[i] for i in lay.input_frames])
            decoded = self._window(c2ws, Ks, torch.tensor(lay.cond_mask), cond_imgs, f"{label} window {w + 1}/{len(chunks)}")
            for slot, j in zip(lay.slots, lay.slot_targets, strict=True):
                results[j] = decoded[slot]
            # generated targets become pool element n_inputs + j: pseudo-inputs of later windows
            while grow_pool and len(pool.images) - n_inputs in results:
                j = len(pool.images) - n_inputs
                pool.images.append(results[j])
                pool.c2ws.append(tg_c2w[j])
                pool.Ks.append(tg_K[j])
        return results

    def _window(self, c2ws, Ks, cond_mask, cond_imgs, label: str) -> Tensor:
        s, dev = self.s, self.model.device
        T = len(c2ws)
        t0 = time.perf_counter()
        latents = self.model.vae.encode(cond_imgs)
        clip = self.model.clip(cond_imgs).mean(0)
        self.vae_s += time.perf_counter() - t0
        uncond, cond, scales = window_conditioning(
            c2ws, Ks, cond_mask, latents.cpu(), clip.cpu(), self.all_c2ws, self.hw, s.camera_scale, s.guider, s.cfg, s.cfg_min
        )
        h, w = self.hw[0] // 8, self.hw[1] // 8
        # the reference's RNG order per window: an image-shaped draw it multiplies by 0, the initial
        # latent noise, then one draw per step -- all from one CPU generator here
        torch.randn((T, 3, *self.hw), generator=self.gen)
        x = torch.randn((T, 4, h, w), generator=self.gen) * math.sqrt(1 + float(self.sigmas[0]) ** 2)

        def noise(i: int, x: Tensor) -> Tensor:
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled(f"cancelled in {label}, step {i + 1} of {s.steps}")
            return torch.randn(x.shape, generator=self.gen).to(x.device)

        def step(i: int, n: int) -> None:
            self.calls += 1
            if self.callback:
                self.callback(label, self.calls, self.total)

        t1 = time.perf_counter()
        out = sample_euler_edm(self.denoiser, x.to(dev), self.sigmas.to(dev), uncond, cond, scales, noise, callback=step)
        self.sample_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        images = self.model.vae.decode(out).cpu()
        self.vae_s += time.perf_counter() - t2
        return images
