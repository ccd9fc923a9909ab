"""``python -m backend eval-toy``: measured evidence with the toy models on held-out toy scenes.

Each scene: 8 turntable views rendered under some sun (the inputs) and a vocabulary prompt; the
ground truth is every view rendered under the world light the prompt means for the *reference*
view (view 0). Compared: (a) the editor on each view independently, (b) the editor coupled with
SEVA at several lam (``lam = 0`` is (c): the reference edited alone, then SEVA's novel views from
it, with nothing pulling the other views towards their own edits) and, as the multi-view model's own
ceiling, (d) SEVA's novel views from the *ground-truth* reference view (no editor at all); as the floor,
the inputs themselves scored as the answer (no edit). Scores: PSNR and SSIM to the
ground truth (all views, and the 7 non-reference views), and the reprojection consistency of
``backend.consistency`` on the exact depth (mean |RGB difference| of mutually visible pixels).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..consistency import ViewGeometry, consistency
from ..models.editors.ic_light import composite_on_grey
from . import cameras, prompts
from .data import FOV, composite, straight
from .render import render
from .scene import random_scenes

Tensor = torch.Tensor
SEED_BASE = 900_000_000  # held-out scenes: far from the seeds training draws (and they are continuous anyway)
LAMS = (0.0, 0.005, 0.015, 0.05, 0.1)


@dataclass
class EvalScene:
    index: int
    prompt: str
    rgba: list[np.ndarray]  # (H, W, 4) 0..255 floats: the inputs
    truth: np.ndarray  # (V, H, W, 3) in [0, 1] on grey: every view under the prompt's light for view 0
    depth: np.ndarray  # (V, H, W) planar depth, inf on the background
    K: np.ndarray  # (V, 3, 3)
    c2w: np.ndarray  # (V, 4, 4)


def job_views(sc: EvalScene, depth: bool = False) -> tuple[list[dict], dict[str, bytes]]:
    """The scene as a job's ``views`` (camera ``cam i``: size, K, c2w, image ``v{i}.png`` and, with
    ``depth``, ``d{i}.npy``) and the input files they name (PNG / NPY bytes, as ``JobFolder.create`` takes)."""
    import io

    from PIL import Image

    views, files = [], {}
    for i, (rgba, K, c2w) in enumerate(zip(sc.rgba, sc.K, sc.c2w, strict=True)):
        h, w = rgba.shape[:2]
        buf = io.BytesIO()
        Image.fromarray(np.round(rgba).astype(np.uint8), "RGBA").save(buf, format="PNG")
        files[f"v{i}.png"] = buf.getvalue()
        views.append({"name": f"cam {i}", "width": w, "height": h, "K": K.tolist(), "c2w": c2w.tolist(), "image": f"v{i}.png"})
        if depth:
            buf = io.BytesIO()
            np.save(buf, np.where(np.isfinite(sc.depth[i]), sc.depth[i], 0).astype(np.float32))
            files[f"d{i}.npy"] = buf.getvalue()
            views[-1]["depth"] = f"d{i}.npy"
    return views, files


def make_scene(i: int, n_views: int = 8, size: int = 128) -> EvalScene:
    rng = random.Random(SEED_BASE + i)
    g = torch.Generator().manual_seed(SEED_BASE + i)
    scene = random_scenes(1, seed=SEED_BASE + i)
    c2w = cameras.turntable(n_views, rng.uniform(12, 32), rng.uniform(3.4, 4.0), rng.uniform(0, 360))
    text = rng.choice(prompts.all_prompts())
    source = prompts.random_lights(1, g)
    target = prompts.light_for(text, c2w[:1])
    rows = torch.zeros(n_views, dtype=torch.long)
    K = cameras.intrinsics(FOV, size, size).expand(n_views, 3, 3)
    src = render(scene.index(rows), source.index(rows), K, c2w, size, size)
    tgt = render(scene.index(rows), target.index(rows), K, c2w, size, size)
    rgb = straight(src.rgb, src.alpha)
    rgba = torch.cat([rgb, src.alpha], 1).permute(0, 2, 3, 1).numpy() * 255.0
    truth = composite(tgt.rgb, tgt.alpha).permute(0, 2, 3, 1).numpy()
    depth = np.where(src.depth.numpy() > 0, src.depth.numpy(), np.inf)
    return EvalScene(i, text, list(rgba), truth, depth, K.numpy().astype(np.float64), c2w.numpy().astype(np.float64))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * math.log10(max(float(np.mean((a - b) ** 2)), 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of (H, W, 3) images in [0, 1]: Gaussian window sigma 1.5 (11 taps), per channel."""
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].double()
    t = torch.arange(11, dtype=torch.float64) - 5
    k1 = torch.exp(-(t**2) / (2 * 1.5**2))
    k1 = k1 / k1.sum()
    win = (k1[:, None] * k1[None]).expand(3, 1, 11, 11)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, win, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def scores(images: np.ndarray, sc: EvalScene) -> dict:
    """PSNR/SSIM to the ground truth (all views; views 1..V-1) and reprojection consistency."""
    per_psnr = [psnr(im, gt) for im, gt in zip(images, sc.truth, strict=True)]
    per_ssim = [ssim(im, gt) for im, gt in zip(images, sc.truth, strict=True)]
    geo = [ViewGeometry(im, d, K, c) for im, d, K, c in zip(images, sc.depth, sc.K, sc.c2w, strict=True)]
    return {
        "psnr": float(np.mean(per_psnr)),
        "psnr_others": float(np.mean(per_psnr[1:])),
        "ssim": float(np.mean(per_ssim)),
        "ssim_others": float(np.mean(per_ssim[1:])),
        "consistency": consistency(geo).mean,
    }


@dataclass
class EvalSettings:
    scenes: int = 24
    lams: tuple[float, ...] = LAMS
    steps: int = 25
    cfg_editor: float = 2.0
    cfg_multiview: float = 2.0
    size: int = 128
    views: int = 8
    device: str = "auto"
    seed: int = 0
    seva_from_truth: bool = True  # method (d): SEVA alone from the ground-truth view 0
    vae_round_trip: bool = True  # the ceiling: the ground truth encoded and decoded by the toy VAE


@dataclass
class EvalResult:
    settings: dict
    rows: list[dict] = field(default_factory=list)  # one per (scene, method)
    summary: dict = field(default_factory=dict)  # method -> mean scores
    examples: dict = field(default_factory=dict)  # method -> (V, H, W, 3) images of the first scene
    timings_s: dict = field(default_factory=dict)


def load_toy_models(device: str = "auto"):
    from ..models.editors.ic_light import load_ic_light
    from ..models.seva.encoders import load_seva_model
    from ..models.weights import pick_device

    dev = pick_device(device)
    seva = load_seva_model("seva-toy", dtype=torch.float32, device=dev)
    editor = load_ic_light("fc", base="ic-light-toy", dtype="float32", device=str(dev))
    return seva, editor


def independent(editor, sc: EvalScene, s: EvalSettings) -> np.ndarray:
    from ..pipelines.multiview_edit import edit_independently

    return to_images(edit_independently(editor, sc.rgba, sc.prompt, s.steps, s.cfg_editor, s.seed))


def coupled(seva, editor, sc: EvalScene, s: EvalSettings, lam: float) -> np.ndarray:
    from ..pipelines.multiview_edit import EditSettings, EditView, edit_views

    views = [EditView(rgba, K, c2w) for rgba, K, c2w in zip(sc.rgba, sc.K, sc.c2w, strict=True)]
    es = EditSettings(
        sc.prompt, lam=lam, steps=s.steps, cfg_editor=s.cfg_editor, cfg_multiview=s.cfg_multiview, T=s.views, size=s.size, seed=s.seed
    )
    res = edit_views(seva, editor, views, 0, es)
    return to_images(torch.stack(res.images))


SEVA_FROM_TRUTH = "seva from truth"
NO_EDIT = "no edit (the inputs)"  # the baseline every edit must beat: the inputs scored as the answer
VAE_ROUND_TRIP = "vae round trip of truth"


def seva_from_truth(seva, sc: EvalScene, s: EvalSettings) -> np.ndarray:
    """View 0 is the ground truth itself; views 1.. are SEVA's novel views from it (CFG as the coupled runs)."""
    from ..pipelines.novel_views import NovelViewSettings, PosedView, novel_views

    truth = torch.from_numpy(sc.truth).permute(0, 3, 1, 2).float() * 2 - 1
    h, w = sc.truth.shape[1:3]
    views = [PosedView(torch.tensor(c).float(), torch.tensor(K).float(), w, h) for c, K in zip(sc.c2w, sc.K, strict=True)]
    views[0].image = truth[0]
    ns = NovelViewSettings(steps=s.steps, cfg=s.cfg_multiview, T=s.views, size=s.size, seed=s.seed + 1)
    res = novel_views(seva, views[:1], views[1:], ns)
    return to_images(torch.stack([truth[0], *res.images]))


@torch.no_grad()
def vae_round_trip(vae, sc: EvalScene) -> np.ndarray:
    """The ground truth through the toy VAE (encode, posterior mode, decode), as it was trained (x * 2 - 1):
    the best any method working in its latents could score."""
    x = torch.from_numpy(sc.truth).permute(0, 3, 1, 2).to(vae.device, vae.dtype) * 2 - 1
    return to_images(vae.decode(vae.encode(x).latent_dist.mode()).sample)


def on_grey(rgba: list[np.ndarray]) -> np.ndarray:
    """Views given as (H, W, 4) 0..255 RGBA, composited as the editors see them (on grey): (V, H, W, 3) in [0, 1]."""
    return np.stack([composite_on_grey(a[..., :3], a[..., 3] / 255.0) / 255.0 for a in rgba])


def to_images(x: Tensor) -> np.ndarray:
    """(V, 3, H, W) in [-1, 1] -> (V, H, W, 3) in [0, 1]."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64)


def toy_model_versions() -> dict[str, dict]:
    """Which training of each toy model was measured: total steps and the commit of its last part (training.json)."""
    from ..registry import TOY_DIR

    versions = {}
    for name in ("vae-toy", "ic-light-toy", "seva-toy"):
        info = json.loads((TOY_DIR / name / "training.json").read_text())
        versions[name] = {"steps": info.get("total_steps", info.get("steps")), "last_part_commit": info.get("commit")}
    return versions


def evaluate(s: EvalSettings, models=None, log=print, out: Path | None = None) -> EvalResult:
    """Every scene and method; with ``out``, results are written after each scene (a cut-short run keeps them)."""
    t0 = time.perf_counter()
    seva, editor = models or load_toy_models(s.device)
    res = EvalResult(settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()})
    if models is None:  # the shipped toy models: say which training was measured
        res.settings["models"] = toy_model_versions()
    res.timings_s["load"] = time.perf_counter() - t0
    methods = ["independent"] + [f"coupled lam={lam:g}" for lam in s.lams] + ([SEVA_FROM_TRUTH] if s.seva_from_truth else [])
    methods += [VAE_ROUND_TRIP] if s.vae_round_trip else []
    timing = {m: 0.0 for m in methods}
    for i in range(s.scenes):
        sc = make_scene(i, s.views, s.size)
        res.rows.append({"scene": i, "prompt": sc.prompt, "method": "ground truth", **scores(sc.truth, sc)})
        inputs = on_grey(sc.rgba)
        res.rows.append({"scene": i, "prompt": sc.prompt, "method": NO_EDIT, **scores(inputs, sc)})
        for m in methods:
            t = time.perf_counter()
            if m == "independent":
                imgs = independent(editor, sc, s)
            elif m == SEVA_FROM_TRUTH:
                imgs = seva_from_truth(seva, sc, s)
            elif m == VAE_ROUND_TRIP:
                imgs = vae_round_trip(editor.pipe.vae, sc)
            else:
                imgs = coupled(seva, editor, sc, s, float(m.split("=")[1]))
            timing[m] += time.perf_counter() - t
            res.rows.append({"scene": i, "prompt": sc.prompt, "method": m, **scores(imgs, sc)})
            if i == 0:
                res.examples[m] = imgs
        if i == 0:
            res.examples["inputs"] = inputs
            res.examples["ground truth"] = sc.truth
        log(f"scene {i + 1}/{s.scenes} ({sc.prompt}) done")
        res.summary = summarise(res.rows, ["ground truth", NO_EDIT, *methods])
        res.timings_s |= {f"{m} per scene": t / (i + 1) for m, t in timing.items()}
        res.timings_s["total"] = time.perf_counter() - t0
        res.settings["scenes_done"] = i + 1
        if out is not None:
            write(res, out)
    return res


def summarise(rows: list[dict], methods: list[str]) -> dict:
    keys = ("psnr", "psnr_others", "ssim", "ssim_others", "consistency")
    return {m: {k: float(np.nanmean([r[k] for r in rows if r["method"] == m])) for k in keys} for m in methods}


def table(res: EvalResult) -> str:
    head = "| method | PSNR (dB) all | PSNR views 1-7 | SSIM all | SSIM views 1-7 | consistency (lower = more consistent) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for m, v in res.summary.items():
        lines.append(
            f"| {m} | {v['psnr']:.2f} | {v['psnr_others']:.2f} | {v['ssim']:.3f} | {v['ssim_others']:.3f} | {v['consistency']:.4f} |"
        )
    return "\n".join(lines)


def sheet(res: EvalResult, path: Path) -> None:
    """Rows: inputs, independent, each coupled lam, SEVA from the truth, the VAE round trip, ground truth (first scene), labelled."""
    from PIL import Image, ImageDraw

    coupled_rows = [m for m in res.examples if m.startswith("coupled")]
    order = ["inputs", "independent", *coupled_rows, SEVA_FROM_TRUTH, VAE_ROUND_TRIP, "ground truth"]
    order = [m for m in order if m in res.examples]
    rows = [np.concatenate(list(res.examples[m]), axis=1) for m in order]
    h = rows[0].shape[0]
    label_w = 150
    canvas = Image.new("RGB", (label_w + rows[0].shape[1], h * len(rows) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "TOY MODELS (trained on the toy world) - eval-toy scene 0", fill="black")
    for k, (m, row) in enumerate(zip(order, rows, strict=True)):
        canvas.paste(Image.fromarray((np.clip(row, 0, 1) * 255).astype(np.uint8)), (label_w, 18 + k * h))
        draw.text((4, 18 + k * h + h // 2 - 6), m, fill="black")
    canvas.save(path)


def plot(res: EvalResult, path: Path) -> None:
    """PSNR (views 1-7) and consistency against lam; independent, no edit (PSNR) and the ground truth
    (consistency) as dashed levels (PIL only)."""
    from PIL import Image, ImageDraw

    lams = res.settings["lams"]
    W, H, pad = 640, 300, 50
    img = Image.new("RGB", (W * 2, H), "white")
    d = ImageDraw.Draw(img)
    for panel, (key, title) in enumerate((("psnr_others", "PSNR to ground truth, views 1-7 (dB)"), ("consistency", "consistency error"))):
        x0 = panel * W
        ys = [res.summary[f"coupled lam={lam:g}"][key] for lam in lams]
        ind = res.summary["independent"][key]
        gt = res.summary["ground truth"][key] if key == "consistency" else None
        # the unedited inputs' PSNR (their consistency sits on the ground truth's, so only on the left)
        floor = res.summary[NO_EDIT][key] if key == "psnr_others" else None
        vals = ys + [ind] + [v for v in (gt, floor) if v is not None]
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        lo, hi = lo - 0.1 * span, hi + 0.1 * span

        def pt(i: int, v: float, x0: int = x0, lo: float = lo, hi: float = hi) -> tuple[float, float]:
            return x0 + pad + i * (W - 2 * pad) / max(len(lams) - 1, 1), H - pad - (v - lo) / (hi - lo) * (H - 2 * pad)

        d.rectangle([x0 + pad, pad, x0 + W - pad, H - pad], outline="black")
        d.text((x0 + pad, 10), title, fill="black")
        d.line([pt(i, v) for i, v in enumerate(ys)], fill=(200, 60, 20), width=3)
        for i, v in enumerate(ys):
            x, y = pt(i, v)
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(200, 60, 20))
            d.text((x - 10, H - pad + 6), f"{lams[i]:g}", fill="black")
            d.text((x + 6, y - 14), f"{v:.3g}", fill=(200, 60, 20))
        levels = ((ind, (40, 90, 200), "independent"), (gt, (40, 150, 40), "ground truth"), (floor, (120, 120, 120), "no edit"))
        for level, colour, name in levels:
            if level is None:
                continue
            y = pt(0, level)[1]
            for xs in range(x0 + pad, x0 + W - pad, 12):
                d.line([(xs, y), (xs + 6, y)], fill=colour, width=2)
            d.text((x0 + W - pad - 90, y - 14), f"{name} {level:.3g}", fill=colour)
        d.text((x0 + W // 2 - 20, H - 20), "lam", fill="black")
    img.save(path)


def write(res: EvalResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_toy.json").write_text(json.dumps({k: v for k, v in res.__dict__.items() if k != "examples"}, indent=1))
    (out / "table.md").write_text(table(res) + "\n")
    sheet(res, out / "examples.png")
    plot(res, out / "lam_sweep.png")
