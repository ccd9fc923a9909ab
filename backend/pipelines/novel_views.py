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
from .spread import NOVEL_VIEW_WINDOW, Spread, in_order

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
    spread: Spread = in_order,  # where the independent windows of a pass run (backend.pipelines.spread)
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
    runner = _WindowRunner(model, s, hw, all_c2ws, gen, callback, should_cancel, spread)
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
    def __init__(self, model: SevaModel, s: NovelViewSettings, hw, all_c2ws, gen, callback, should_cancel, spread: Spread) -> None:
        self.model, self.s, self.hw, self.all_c2ws, self.gen = model, s, hw, all_c2ws, gen
        self.callback, self.should_cancel, self.spread = callback, should_cancel, spread
        self.n_noise = len(seva_schedule(s.steps)) - 1
        self.calls, self.sample_s, self.vae_s, self.total = 0, 0.0, 0.0, 0

    def run(self, chunks, pool: _Pool, tg_c2w, tg_K, grow_pool: bool, label: str) -> dict[int, Tensor]:
        """Every window of one pass. Growing the pool makes each window wait for the last (anchors);
        otherwise the windows are independent and go to ``spread`` together, each with the generator
        state it would have had running in order."""
        results: dict[int, Tensor] = {}
        n_inputs = len(pool.images)
        layouts = [chunking.window_layout(chunk) for chunk in chunks]

        def payload(w: int, lay) -> dict:
            return {
                "c2ws": torch.stack(lay.gather(pool.c2ws, tg_c2w)),
                "Ks": torch.stack(lay.gather(pool.Ks, tg_K)),
                "cond_mask": torch.tensor(lay.cond_mask),
                "cond_imgs": torch.stack([pool.images[i] for i in lay.input_frames]),
                "all_c2ws": self.all_c2ws,
                "hw": self.hw,
                "settings": dict(self.s.__dict__),
                "label": f"{label} window {w + 1}/{len(chunks)}",
            }

        def keep(lay, out: dict) -> None:
            if not out.get("counted"):  # a window that ran elsewhere: its steps show up when it is back
                self.calls += self.n_noise
                if self.callback:
                    self.callback(out["label"], self.calls, self.total)
            self.sample_s, self.vae_s = self.sample_s + out["sample_s"], self.vae_s + out["vae_s"]
            for slot, j in zip(lay.slots, lay.slot_targets, strict=True):
                results[j] = out["images"][slot]

        if grow_pool:
            for w, lay in enumerate(layouts):
                keep(lay, self._here(payload(w, lay) | {"rng": self.gen.get_state()}, advance=True))
                # generated targets become pool element n_inputs + j: pseudo-inputs of later windows
                while len(pool.images) - n_inputs in results:
                    j = len(pool.images) - n_inputs
                    pool.images.append(results[j])
                    pool.c2ws.append(tg_c2w[j])
                    pool.Ks.append(tg_K[j])
            return results
        payloads = []
        for w, lay in enumerate(layouts):
            payloads.append(payload(w, lay) | {"rng": self.gen.get_state()})
            window_noise(self.gen, len(payloads[-1]["c2ws"]), self.hw, self.n_noise)  # as if the window ran here
        for lay, out in zip(layouts, self.spread(NOVEL_VIEW_WINDOW, payloads, self._here), strict=True):
            keep(lay, out)
        return results

    def _here(self, p: dict, advance: bool = False) -> dict:
        def on_step(i: int, n: int) -> None:
            if self.callback:
                self.callback(p["label"], self.calls + i, self.total)

        out = sample_window(self.model, p, on_step, self.should_cancel)
        self.calls += self.n_noise
        out["counted"] = True
        if advance:  # the live generator moves on as if the window had drawn from it
            self.gen.set_state(out.pop("rng_after"))
        return out


def window_noise(gen: torch.Generator, T: int, hw: tuple[int, int], n: int) -> tuple[Tensor, list[Tensor]]:
    """One window's draws in the reference's order: an image-shaped draw it multiplies by 0, the
    initial latent noise, then one draw per step -- all from one CPU generator."""
    torch.randn((T, 3, *hw), generator=gen)
    shape = (T, 4, hw[0] // 8, hw[1] // 8)
    return torch.randn(shape, generator=gen), [torch.randn(shape, generator=gen) for _ in range(n)]


def sample_window(model: SevaModel, p: dict, on_step=None, should_cancel=None) -> dict:
    """One SEVA window from its payload: conditioning, the Euler-EDM sampler, decode.

    Returns the decoded images (T, 3, H, W) on the CPU, the seconds spent and the generator state after."""
    s = NovelViewSettings(**p["settings"])
    dev, hw = model.device, tuple(p["hw"])
    t0 = time.perf_counter()
    latents = model.vae.encode(p["cond_imgs"])
    clip = model.clip(p["cond_imgs"]).mean(0)
    vae_s = time.perf_counter() - t0
    uncond, cond, scales = window_conditioning(
        p["c2ws"], p["Ks"], p["cond_mask"], latents.cpu(), clip.cpu(), p["all_c2ws"], hw, s.camera_scale, s.guider, s.cfg, s.cfg_min
    )
    sigmas = seva_schedule(s.steps)
    gen = torch.Generator("cpu")
    gen.set_state(p["rng"])
    x0, draws = window_noise(gen, len(p["c2ws"]), hw, len(sigmas) - 1)
    x = x0 * math.sqrt(1 + float(sigmas[0]) ** 2)

    def noise(i: int, x: Tensor) -> Tensor:
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled in {p['label']}, step {i + 1} of {s.steps}")
        return draws[i].to(x.device)

    t1 = time.perf_counter()
    out = sample_euler_edm(SevaDenoiser(model.net), x.to(dev), sigmas.to(dev), uncond, cond, scales, noise, callback=on_step)
    sample_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    images = model.vae.decode(out).cpu()
    return {
        "images": images,
        "sample_s": sample_s,
        "vae_s": vae_s + time.perf_counter() - t2,
        "rng_after": gen.get_state(),
        "label": p["label"],
    }
