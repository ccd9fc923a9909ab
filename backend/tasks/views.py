"""Task novel_views (SEVA), and what the view tasks share: loading SEVA, the consistency report."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..jobs import JobFolder, JobSpec, OutputFile
from ..naming import view_stem
from ..registry import MODELS
from .common import Reporter, write_metadata

if TYPE_CHECKING:
    from ..model_cache import ModelCache


def trained_window_and_size(key: str, mv, rep: Reporter, size):
    """SEVA's window T and working size for this job: what the job asks, except that a toy SEVA keeps
    the window and size it was trained on (said in the log). ``size``: the task's own choice."""
    own = MODELS[key].defaults if key in MODELS else {}
    window = min(mv.window, own.get("window", mv.window))
    work = own.get("size") or size
    if window != mv.window or (mv.size and work != mv.size):
        rep.emit(
            "loading", message=f"{key} was trained on windows of {own['window']} views at {work} px: using window {window}, size {work}"
        )
    return window, work


def novel_views(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import torch

    from ..media import load_image, save_image, side_by_side, tensor_to_pil
    from ..pipelines.novel_views import NovelViewSettings, PosedView
    from ..pipelines.novel_views import novel_views as generate_views

    mv = spec.multiview
    key, model = load_seva(spec, rep, cache)
    views = []
    for v in spec.views:
        img = load_image(job.input_path(v.image)) if v.image else None
        views.append(PosedView(torch.tensor(v.c2w), torch.tensor(v.K), v.width, v.height, img))
    inputs = [pv for pv in views if pv.image is not None]
    targets = [(v, pv) for v, pv in zip(spec.views, views, strict=True) if pv.image is None]
    size = (spec.output.width, spec.output.height) if spec.output.width and spec.output.height else (mv.size or 576)
    window, size = trained_window_and_size(key, mv, rep, size)
    settings = NovelViewSettings(
        steps=spec.sampling.steps or 50,
        cfg=spec.sampling.cfg_multiview if spec.sampling.cfg_multiview is not None else 2.0,
        cfg_min=mv.cfg_min,
        guider=mv.guider,
        camera_scale=mv.camera_scale,
        T=window,
        seed=spec.sampling.seed,
        size=size,
        passes=mv.passes,
        strategy=mv.chunk_strategy,
    )

    def on_step(label: str, i: int, n: int) -> None:
        rep.emit("sampling", i, n, label, None)

    res = generate_views(
        model, inputs, [pv for _, pv in targets], settings, callback=on_step, should_cancel=should_cancel, spread=cache.spread
    )
    rep.emit("writing")
    outputs, pils = [], []
    for (v, _), img in zip(targets, res.images, strict=True):
        pil = tensor_to_pil(img).resize((v.width, v.height), resample=3)  # back to the view's own size
        name = f"outputs/{view_stem(spec.views.index(v), v.name)}.png"
        save_image(pil, job.root / name)
        pils.append(pil)
        outputs.append(OutputFile(path=name, kind="image", view=v.name, role="result"))
    footer = "SEVA novel views" + (
        "" if not model.labels else " | TOY MODELS" if MODELS.get(key) and MODELS[key].toy else " | TINY RANDOM WEIGHTS"
    )
    side_by_side(pils, [v.name for v, _ in targets], footer=footer).save(job.root / "outputs/contact_sheet.png")
    outputs.append(OutputFile(path="outputs/contact_sheet.png", kind="image", role="side_by_side"))
    meta = res.metadata | {"model": key, "targets": [v.name for v, _ in targets], "inputs": [v.name for v in spec.views if v.image]}
    if all(v.depth for v in spec.views):
        rep.emit("writing", message="consistency report")
        generated = dict(zip([v.name for v, _ in targets], pils, strict=True))
        meta["consistency"] = consistency_outputs(spec, job, generated, outputs)
    write_metadata(job, meta)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, meta


def consistency_outputs(spec: JobSpec, job: JobFolder, generated: dict, outputs: list[OutputFile], depths: dict | None = None) -> dict:
    """Reproject every view into the others with the exact depths; report + heat maps (DESIGN §3.6).

    ``depths`` replaces the views' depth passes where the edit changed the geometry (spatial edits)."""
    import numpy as np
    from PIL import Image

    from ..consistency import ViewGeometry, consistency, heatmap_rgb
    from ..media import side_by_side

    views = []
    for v in spec.views:
        img = generated[v.name] if v.name in generated else Image.open(job.input_path(v.image)).convert("RGB")
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
        depth = depths[v.name] if depths and v.name in depths else np.load(job.input_path(v.depth))
        views.append(ViewGeometry(arr, depth, np.array(v.K), np.array(v.c2w)))
    report = consistency(views)
    data = report.to_dict() | {"views": [v.name for v in spec.views], "units": "mean absolute RGB difference, 0..1"}
    (job.root / "outputs/consistency.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    outputs.append(OutputFile(path="outputs/consistency.json", kind="json", role="consistency"))
    heat = [Image.fromarray(heatmap_rgb(h)) for h in report.heatmaps]
    caps = [f"{v.name}: {e:.3f}" if e == e else f"{v.name}: -" for v, e in zip(spec.views, report.per_view, strict=True)]
    side_by_side(heat, caps, footer=f"consistency, mean {report.mean:.3f}").save(job.root / "outputs/consistency_heatmaps.png")
    outputs.append(OutputFile(path="outputs/consistency_heatmaps.png", kind="image", role="consistency"))
    return {"mean": report.mean, "per_view": report.per_view}


def load_seva(spec: JobSpec, rep: Reporter, cache: ModelCache):
    from ..models.seva.encoders import load_seva_model
    from ..models.weights import pick_device, torch_dtype

    m = spec.models
    key = m.multiview or "seva-1.1"
    device = pick_device(m.device)
    dtype = torch_dtype(m.dtype, device)  # auto: fp32 on the CPU (the toy weights are stored in fp16)
    rep.emit("loading", message=f"loading {key}")
    source = m.local(key, m.multiview_source)
    speed = job_speed(m)

    def load():
        model = load_seva_model(source, dtype=dtype, device=device, paths=m.paths)
        model.net = sped_up(model.net, speed, key, rep, cache)
        return model

    return key, cache.get(("seva", key, source, m.paths.get("seva-vae"), m.paths.get("seva-clip"), m.dtype, str(device), speed), load)


def job_speed(m) -> str:
    """The job's speed mode for its device (``models.speed``, ``auto`` resolved)."""
    from ..models.speed import resolve
    from ..models.weights import pick_device

    return resolve(m.speed, pick_device(m.device))


def sped_up(net, speed: str, name: str, rep: Reporter, cache: ModelCache):
    """``net`` in the job's speed mode (``backend.models.speed``); says what that means in the job's log."""
    from ..models.speed import speed_up

    net, done = speed_up(net, speed, name, lambda msg: rep.emit("loading", message=msg))
    cache.compiled(done.caches)
    return net
