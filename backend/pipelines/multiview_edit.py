"""Multi-view editing (DESIGN §3.5): a 2D editor coupled with SEVA at every denoising step.

Editors: IC-Light (``relight_text``) and ControlNet img2img (``stylize``). Each implements
``view_conditions(rgba, extras)`` (per-view conditioning, indexable by a list of views),
``participant(name, conds, prompt, steps, cfg, seeds, negative)`` and ``decode``.

1. The editor edits the reference view alone (a plain 2D edit).
2. SEVA is conditioned on that edited view and every camera; the other views are its targets,
   in windows of T frames (nearest-gt chunking).
3. In each window, SEVA's target frame k is coupled to the editor's trajectory for view k
   (conditioned on that view's own image), with strength lam; SEVA's frames are the output.
Both models work at one resolution (SEVA's working size, multiples of 64) so latents align.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..models.editors import Editor
from ..models.seva import chunking
from ..models.seva.cameras import normalise_pixel_K
from ..models.seva.encoders import SevaModel
from ..models.seva.preprocess import transform_img_and_K, working_size
from ..models.seva.sampling import SevaDenoiser, SevaWindowDenoiser, seva_schedule, window_conditioning
from ..sampling import Coupling, Participant, StepInfo, sample_coupled
from ..sampling.resample import resize_latents
from .spread import EDIT_WINDOW, Spread, in_order

Tensor = torch.Tensor


@dataclass
class EditView:
    rgba: np.ndarray  # (H, W, 4) uint8-range floats; alpha from the render (exact foreground)
    K: np.ndarray  # 3x3 pixel intrinsics
    c2w: np.ndarray  # 4x4 OpenCV
    # per-view extra images at the view's size, (H, W, C) floats: ControlNet condition images by
    # kind (in [0, 1]), "background" for IC-Light fbc (0..255); cropped and resized like rgba
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    # per-view editor inputs passed as they are (not pixel-aligned with the view): Neural Gaffer's
    # environment maps rotated into this camera, a per-view seed
    conditions: dict = field(default_factory=dict)


@dataclass
class EditSettings:
    prompt: str
    negative_prompt: str | None = None  # None: the editor's default
    lam: float = 0.015
    steps: int = 25
    cfg_editor: float = 2.0
    cfg_multiview: float = 2.0
    cfg_min: float = 1.2
    guider: int = 1
    camera_scale: float = 2.0
    T: int = 21
    size: int = 576
    seed: int = 0
    step: str = "ddpm"
    alignment: str = "step"
    join: str = "noise"  # alignment="sigma": a late participant starts from noise or its partner's x0_hat
    max_pull: float | None = 0.5
    overlap: bool = False  # CUDA: the editor predicts on a stream of its own beside SEVA (sample_coupled)


@dataclass
class EditResult:
    images: list[Tensor]  # per view, (3, H, W) in [-1, 1] at the working size; the reference is its 2D edit
    reference: int
    size_hw: tuple[int, int]
    metadata: dict = field(default_factory=dict)


def _to_working(img: np.ndarray, K: np.ndarray, W: int, H: int) -> tuple[np.ndarray, Tensor]:
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    out, K2 = transform_img_and_K(t, (W, H), torch.tensor(K)[None].float(), "crop")
    return out[0].permute(1, 2, 0).numpy(), K2[0]


def _working_views(views: Sequence[EditView], s: EditSettings, ref: int):
    """RGBA (and extras) crops at SEVA's working size and normalised K, the same transform for every view."""
    r = views[ref]
    H, W = working_size(torch.tensor(r.K), r.rgba.shape[:2], s.size)
    rgba, extras, Ks = [], [], []
    for v in views:
        img, K = _to_working(v.rgba, v.K, W, H)
        rgba.append(img)
        extras.append({k: _to_working(x, v.K, W, H)[0] for k, x in v.extras.items()})
        Ks.append(normalise_pixel_K(K, W, H))
    return rgba, extras, Ks, (H, W)


def edit_views(
    seva: SevaModel,
    editor: Editor,
    views: Sequence[EditView],
    reference: int,
    s: EditSettings,
    callback: Callable[[str, StepInfo], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    spread: Spread = in_order,  # where the windows run (backend.pipelines.spread)
) -> EditResult:
    if not 0 <= reference < len(views):
        raise ValueError(f"reference view {reference} out of range 0..{len(views) - 1}")
    if len(views) < 2:
        raise ValueError("a multi-view edit needs at least two views")
    t0 = time.perf_counter()
    rgba, extras, Ks, hw = _working_views(views, s, reference)
    conds = editor.view_conditions(rgba, [e | v.conditions for e, v in zip(extras, views, strict=True)])
    negative = s.negative_prompt if s.negative_prompt is not None else editor.default_negative
    others = [i for i in range(len(views)) if i != reference]
    c2ws = [torch.tensor(v.c2w, dtype=torch.float32) for v in views]
    all_c2ws = torch.stack(c2ws)
    chunks = chunking.chunk_input_and_test("nearest-gt", s.T, all_c2ws[[reference]], all_c2ws[others])
    sigmas = seva_schedule(s.steps).double()
    # 1. the reference view, edited alone
    ref_p = editor.participant("editor", conds[[reference]], s.prompt, s.steps, s.cfg_editor, [s.seed], negative)
    # one step count over the whole job: the reference edit, then every window (SEVA's schedule sets its length)
    progress = _GlobalSteps(callback, len(ref_p.sigmas) - 1 + len(chunks) * (len(sigmas) - 1))
    ref_lat = sample_coupled([ref_p], step=s.step, callback=progress.tagged("reference"), should_cancel=should_cancel).latents["editor"]
    ref_img = editor.decode(ref_lat).cpu()[0]  # [-1, 1], at the editor's resolution
    if tuple(ref_img.shape[-2:]) != tuple(hw):  # e.g. Neural Gaffer's 256² crop for SEVA's 576²
        ref_img = F.interpolate(ref_img[None], size=hw, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
    # 2./3. SEVA windows over the other views, each target frame coupled to its editor trajectory;
    # the windows depend only on the reference edit, so they may run elsewhere (``spread``)
    ref_latent = seva.vae.encode(ref_img[None]).cpu()
    clip = seva.clip(ref_img[None]).mean(0).cpu()
    out: dict[int, Tensor] = {reference: ref_img}
    payloads = []
    for w_i, chunk in enumerate(chunks):
        lay = chunking.window_layout(chunk)  # inputs: [the reference view]; targets: the other views
        frames = lay.gather([reference], others)
        targets = [others[j] for j in lay.slot_targets]
        payloads.append({
            "c2ws": torch.stack([c2ws[i] for i in frames]),
            "Ks": torch.stack([Ks[i] for i in frames]),
            "cond_mask": torch.tensor(lay.cond_mask),
            "slots": lay.slots,  # first occurrences only: padding duplicates are not coupled
            "targets": targets,
            "conds": conds[targets],
            "ref_latent": ref_latent,
            "clip": clip,
            "all_c2ws": all_c2ws,
            "hw": hw,
            "settings": dict(s.__dict__),
            "negative": negative,
            "window": w_i,
            "label": f"window {w_i + 1}/{len(chunks)}",
        })  # fmt: skip

    def here(p: dict) -> dict:
        return edit_window(seva, editor, p, progress.tagged(p["label"]), should_cancel)

    covered: list[int] = []
    for res in spread(EDIT_WINDOW, payloads, here):
        for k, t in enumerate(res["targets"]):
            out[t] = res["images"][k]
        covered += res["targets"]
    assert sorted(covered) == others, "every target view is generated exactly once"
    meta = {
        "settings": s.__dict__,
        "editor": editor.describe(),
        "windows": len(chunks),
        "working_size_hw": list(hw),
        "labels": sorted(set(seva.labels + editor.labels)),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    return EditResult([out[i] for i in range(len(views))], reference, hw, meta)


def edit_window(seva: SevaModel, editor: Editor, p: dict, callback=None, should_cancel=None) -> dict:
    """One SEVA window over target views, each target frame coupled to its own editor trajectory.

    ``p`` is the window's payload (see ``edit_views``); runs wherever the models are (``spread``)."""
    s = EditSettings(**p["settings"])
    hw = tuple(p["hw"])
    cond_mask = p["cond_mask"]
    n_cond = int(cond_mask.sum())
    uncond, cond, scales = window_conditioning(
        p["c2ws"], p["Ks"], cond_mask, p["ref_latent"].expand(n_cond, -1, -1, -1), p["clip"], p["all_c2ws"], hw,
        s.camera_scale, s.guider, s.cfg_multiview, s.cfg_min,
    )  # fmt: skip
    T, (h, w) = len(p["c2ws"]), (hw[0] // 8, hw[1] // 8)
    sigmas = seva_schedule(s.steps).double()
    denoiser = SevaWindowDenoiser(SevaDenoiser(seva.net), uncond, cond, scales, seva.device)
    seva_p = Participant("seva", denoiser, (T, 4, h, w), sigmas=sigmas, seeds=s.seed + 1 + p["window"], device=seva.device)
    slots, targets = p["slots"], p["targets"]
    seeds = [s.seed + 10_000 + t for t in targets]
    ed_p = editor.participant("editor", p["conds"], s.prompt, s.steps, s.cfg_editor, seeds, p["negative"])
    coupling = Coupling("seva", "editor", s.lam, items_a=slots, items_b=list(range(len(slots))))
    ed_hw = tuple(ed_p.shape[-2:])
    if ed_hw != (h, w):  # latents of another size (Neural Gaffer: 32² vs 72²): area down, bilinear up
        coupling.a_to_b, coupling.b_to_a = resize_latents(ed_hw, "area"), resize_latents((h, w), "bilinear")
    res = sample_coupled(
        [seva_p, ed_p],
        [coupling],
        step=s.step,
        alignment=s.alignment,
        sigmas=sigmas if s.alignment == "sigma" else None,
        join=s.join,
        max_pull=s.max_pull,
        callback=callback,
        should_cancel=should_cancel,
        overlap=s.overlap,
    )
    return {"images": seva.vae.decode(res.latents["seva"][slots]).cpu(), "targets": targets, "label": p["label"]}


def edit_independently(
    editor: Editor, rgba: Sequence[np.ndarray], prompt: str, steps: int, cfg: float, seed: int = 0, negative: str | None = None
) -> Tensor:
    """The editor on every view alone (the baseline coupling is compared with): (V, 3, H, W) in [-1, 1].

    View k gets the seed its trajectory has in ``edit_views`` (``seed + 10_000 + k``)."""
    conds = editor.view_conditions(rgba, [{} for _ in rgba])
    neg = negative if negative is not None else editor.default_negative
    p = editor.participant("editor", conds, prompt, steps, cfg, [seed + 10_000 + k for k in range(len(rgba))], neg)
    return editor.decode(sample_coupled([p]).latents["editor"]).cpu()


class _GlobalSteps:
    """Turns each sampler run's own step numbers into one count over the job (the ETA then holds)."""

    def __init__(self, callback: Callable[[str, StepInfo], None] | None, total: int) -> None:
        self.callback, self.total, self.done, self.t0 = callback, total, 0, time.perf_counter()

    def tagged(self, label: str) -> Callable[[StepInfo], None] | None:
        if self.callback is None:
            return None

        def on_step(info: StepInfo) -> None:
            self.done += 1
            self.total = max(self.total, self.done)
            elapsed = time.perf_counter() - self.t0
            self.callback(label, replace(info, step=self.done, total=self.total, elapsed_s=elapsed))

        return on_step


def resize_to(img: Tensor, width: int, height: int) -> Tensor:
    """A working-size result back to a view's own size (the crop is centred: scale to cover)."""
    return F.interpolate(img[None], size=(height, width), mode="bicubic", align_corners=False)[0].clamp(-1, 1)
