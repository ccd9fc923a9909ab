"""``run_job``: one JobSpec in a job folder -> outputs + result.json + progress events.

The same function serves the CLI, the add-on's in-process worker thread and the server's
worker. It never raises for a failed job: the failure is written to result.json (status
``failed`` with the message, or ``cancelled``) so no caller loses what happened.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .jobs import JobFolder, JobResult, JobSpec, OutputFile, ProgressEvent
from .sampling import Cancelled, StepInfo

ProgressFn = Callable[[ProgressEvent], None]
CancelFn = Callable[[], bool]
DEFAULT_LAM = {"couple_images": 0.3, "couple_videos": 0.3}
IMPLEMENTED = ("couple_images", "couple_videos", "novel_views", "relight_text", "stylize", "relight_envmap", "spatial_edit")


class ModelCache:
    """Keeps loaded models between jobs (the server keeps them warm); ``clear()`` frees memory.

    Only the current job's models stay resident (VRAM is the scarce resource): loading a model
    drops those the current job has not used, so a job needing two (SEVA and an editor) keeps both.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._used: set[tuple] = set()

    def begin_job(self) -> None:
        self._used = set()

    def get(self, key: tuple, load: Callable[[], object]) -> object:
        if key not in self._models:
            stale = [k for k in self._models if k not in self._used]
            for k in stale:
                del self._models[k]
            if stale:
                self._free()
            self._models[key] = load()
        self._used.add(key)
        return self._models[key]

    def clear(self) -> None:
        self._models.clear()
        self._free()

    @staticmethod
    def _free() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


class _Reporter:
    """Turns sampler steps into ProgressEvents (with ETA), logs them and forwards them."""

    def __init__(self, job: JobFolder, progress: ProgressFn | None) -> None:
        self.job, self.progress, self.t0 = job, progress, time.perf_counter()

    def emit(self, stage: str, step: int = 0, total: int = 0, message: str = "", eta: float | None = None) -> None:
        ev = ProgressEvent(
            job_id=self.job.job_id, stage=stage, step=step, total=total, message=message, elapsed_s=time.perf_counter() - self.t0, eta_s=eta
        )
        self.job.append_log(ev)
        if self.progress:
            self.progress(ev)

    def step(self, info: StepInfo) -> None:
        eta = info.elapsed_s / info.step * (info.total - info.step)
        self.emit("sampling", info.step, info.total, f"step {info.step}/{info.total}", eta)


def run_job(
    job: JobFolder, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None, cache: ModelCache | None = None
) -> JobResult:
    rep = _Reporter(job, progress)
    started = time.time()
    try:
        spec = job.spec()
        if spec.task not in IMPLEMENTED:
            raise NotImplementedError(f"task {spec.task!r} is not available in this version; available: {', '.join(IMPLEMENTED)}")
        cache = cache or ModelCache()
        cache.begin_job()
        run = {
            "couple_images": _couple_images,
            "couple_videos": _couple_videos,
            "novel_views": _novel_views,
            "relight_text": _relight_text,
            "stylize": _stylize,
            "relight_envmap": _relight_envmap,
            "spatial_edit": _spatial_edit,
        }[spec.task]
        outputs, metadata = run(spec, job, rep, should_cancel, cache)
        result = JobResult(
            job_id=job.job_id, status="done", outputs=outputs, metadata=metadata, started_at=started, finished_at=time.time()
        )
        rep.emit("done", message=f"{len(outputs)} files in {job.outputs}")
    except Cancelled as e:
        result = JobResult(job_id=job.job_id, status="cancelled", error=str(e), started_at=started, finished_at=time.time())
        rep.emit("cancelled", message=str(e))
    except Exception as e:  # noqa: BLE001 - every failure is reported in result.json
        msg = f"{type(e).__name__}: {e}"
        (job.root / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        result = JobResult(job_id=job.job_id, status="failed", error=msg, started_at=started, finished_at=time.time())
        rep.emit("failed", message=msg)
    job.write_result(result)
    return result


def _load_key(spec: JobSpec) -> tuple:
    m = spec.models
    return (spec.task, m.generator, m.source, m.dtype, m.device, m.offload, m.vae_tiling)


def _load_generator(spec: JobSpec, rep: _Reporter, cache: ModelCache, loader):
    m = spec.models
    rep.emit("loading", message=f"loading {m.generator}")
    kwargs = dict(source=m.source, dtype=m.dtype, device=m.device, offload=m.offload, vae_tiling=m.vae_tiling)
    return cache.get(_load_key(spec), lambda: loader(m.generator, **kwargs))


def _prompt_request_fields(spec: JobSpec) -> dict:
    """What image and video requests share: prompts, seeds, lam, steps, size, guidance, chain."""
    e, s = spec.edit, spec.sampling
    return dict(
        prompts=e.prompts,
        lam=s.lam if s.lam is not None else DEFAULT_LAM[spec.task],
        seeds=e.seeds or [s.seed + i for i in range(len(e.prompts))],
        steps=s.steps,
        width=spec.output.width,
        height=spec.output.height,
        guidance=s.cfg_editor,
        negative_prompt=e.negative_prompt,
        chain=e.chain,
        max_pull=s.max_pull,
    )


def _couple_images(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    from .media import side_by_side
    from .pipelines.coupled_t2i import ImageRequest, couple_images, load_t2i

    model = _load_generator(spec, rep, cache, load_t2i)
    req = ImageRequest(
        **_prompt_request_fields(spec),
        true_cfg=spec.sampling.true_cfg,
        step=spec.sampling.step or ("euler" if model.family == "flux" else "ddpm"),
        alignment=spec.sampling.alignment,
    )
    res = couple_images(model, req, callback=rep.step, should_cancel=should_cancel)
    rep.emit("writing")
    outputs = []
    for i, (img, prompt) in enumerate(zip(res.images, req.prompts, strict=True)):
        name = f"outputs/image_{i:02d}_{slug(prompt)}.png"
        img.save(job.root / name)
        outputs.append(OutputFile(path=name, kind="image", role="result"))
    footer = f"lam {req.lam}" + (" | TINY RANDOM WEIGHTS" if model.labels else "")
    side_by_side(res.images, req.prompts, footer=footer).save(job.root / "outputs/side_by_side.png")
    outputs.append(OutputFile(path="outputs/side_by_side.png", kind="image", role="side_by_side"))
    _write_metadata(job, res.metadata)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, res.metadata


def _couple_videos(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import numpy as np

    from .media import to_uint8, write_video
    from .pipelines.coupled_t2v import VideoRequest, couple_videos, load_t2v

    model = _load_generator(spec, rep, cache, load_t2v)
    req = VideoRequest(**_prompt_request_fields(spec), frames=spec.output.frames, step=spec.sampling.step or "euler")
    res = couple_videos(model, req, callback=rep.step, should_cancel=should_cancel)
    rep.emit("writing")
    frames = to_uint8(res.videos)  # (N, F, H, W, 3)
    outputs = []
    for i, prompt in enumerate(req.prompts):
        name = f"outputs/video_{i:02d}_{slug(prompt)}.mp4"
        write_video(job.root / name, frames[i], fps=spec.output.fps)
        outputs.append(OutputFile(path=name, kind="video", role="result"))
    gap = np.zeros((*frames.shape[1:3], 4, 3), dtype=np.uint8)
    tiles = [x for i in range(len(frames)) for x in ((frames[i],) if i == 0 else (gap, frames[i]))]
    write_video(job.root / "outputs/side_by_side.mp4", np.concatenate(tiles, axis=2), fps=spec.output.fps)
    outputs.append(OutputFile(path="outputs/side_by_side.mp4", kind="video", role="side_by_side"))
    _write_metadata(job, res.metadata)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, res.metadata


def _write_metadata(job: JobFolder, metadata: dict) -> None:
    Path(job.root / "outputs/metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")


def _novel_views(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import torch

    from .media import load_image, save_image, side_by_side, tensor_to_pil
    from .pipelines.novel_views import NovelViewSettings, PosedView, novel_views

    mv = spec.multiview
    key, model = _load_seva(spec, rep, cache)
    views = []
    for v in spec.views:
        img = load_image(job.input_path(v.image)) if v.image else None
        views.append(PosedView(torch.tensor(v.c2w), torch.tensor(v.K), v.width, v.height, img))
    inputs = [pv for pv in views if pv.image is not None]
    targets = [(v, pv) for v, pv in zip(spec.views, views, strict=True) if pv.image is None]
    size = (spec.output.width, spec.output.height) if spec.output.width and spec.output.height else (mv.size or 576)
    settings = NovelViewSettings(
        steps=spec.sampling.steps or 50,
        cfg=spec.sampling.cfg_multiview if spec.sampling.cfg_multiview is not None else 2.0,
        cfg_min=mv.cfg_min,
        guider=mv.guider,
        camera_scale=mv.camera_scale,
        T=mv.window,
        seed=spec.sampling.seed,
        size=size,
        passes=mv.passes,
        strategy=mv.chunk_strategy,
    )

    def on_step(label: str, i: int, n: int) -> None:
        rep.emit("sampling", i, n, label, None)

    res = novel_views(model, inputs, [pv for _, pv in targets], settings, callback=on_step, should_cancel=should_cancel)
    rep.emit("writing")
    outputs, pils = [], []
    for (v, _), img in zip(targets, res.images, strict=True):
        pil = tensor_to_pil(img).resize((v.width, v.height), resample=3)  # back to the view's own size
        name = f"outputs/{slug(v.name, 60)}.png"
        save_image(pil, job.root / name)
        pils.append(pil)
        outputs.append(OutputFile(path=name, kind="image", view=v.name, role="result"))
    footer = "SEVA novel views" + (" | TINY RANDOM WEIGHTS" if model.labels else "")
    side_by_side(pils, [v.name for v, _ in targets], footer=footer).save(job.root / "outputs/contact_sheet.png")
    outputs.append(OutputFile(path="outputs/contact_sheet.png", kind="image", role="side_by_side"))
    meta = res.metadata | {"model": key, "targets": [v.name for v, _ in targets], "inputs": [v.name for v in spec.views if v.image]}
    if all(v.depth for v in spec.views):
        rep.emit("writing", message="consistency report")
        generated = dict(zip([v.name for v, _ in targets], pils, strict=True))
        meta["consistency"] = _consistency_outputs(spec, job, generated, outputs)
    _write_metadata(job, meta)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, meta


def _consistency_outputs(spec: JobSpec, job: JobFolder, generated: dict, outputs: list[OutputFile], depths: dict | None = None) -> dict:
    """Reproject every view into the others with the exact depths; report + heat maps (DESIGN §3.6).

    ``depths`` replaces the views' depth passes where the edit changed the geometry (spatial edits)."""
    import numpy as np
    from PIL import Image

    from .consistency import ViewGeometry, consistency, heatmap_rgb
    from .media import side_by_side

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


def _load_seva(spec: JobSpec, rep: _Reporter, cache: ModelCache):
    from .models.seva.encoders import load_seva_model
    from .models.weights import pick_device, torch_dtype

    m = spec.models
    key = m.multiview or "seva-1.1"
    device = pick_device(m.device)
    dtype = None if m.dtype == "auto" and device.type == "cpu" else torch_dtype(m.dtype, device)
    rep.emit("loading", message=f"loading {key}")
    return key, cache.get(
        ("seva", key, m.source, m.dtype, str(device)),
        lambda: load_seva_model("tiny" if key == "seva-tiny" else (m.source or key), dtype=dtype, device=device),
    )


def _relight_text(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    from .models.editors.ic_light import load_ic_light
    from .pipelines.multiview_edit import EditView

    ed_key = spec.models.editor or "ic-light-fc"
    variant = "fbc" if "fbc" in ed_key else "fc"
    base = "tiny" if ed_key.endswith("-tiny") else (spec.models.source or "ic-light-base")
    rep.emit("loading", message=f"loading {ed_key}")
    editor = cache.get(
        ("editor", ed_key, base, spec.models.dtype, spec.models.device),
        lambda: load_ic_light(variant, base=base, dtype=spec.models.dtype, device=spec.models.device),
    )
    background = None
    if spec.edit.background:
        background = np.asarray(Image.open(job.input_path(spec.edit.background)).convert("RGB"), dtype=np.float64)

    def extras(v, rgb: np.ndarray) -> dict:
        if background is None:
            return {}
        h, w = rgb.shape[:2]
        return {"background": np.asarray(Image.fromarray(background.astype(np.uint8)).resize((w, h), 3), dtype=np.float64)}

    def make_view(v, rgba: np.ndarray) -> EditView:
        return EditView(rgba, np.array(v.K), np.array(v.c2w), extras(v, rgba[..., :3]))

    defaults = EditDefaults(lam=0.015, cfg=2.0, steps=25)
    return _edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"relit: {spec.edit.prompt}", defaults)


def _stylize(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import numpy as np

    from .jobs import Control
    from .models.editors.control_images import control_image
    from .models.editors.controlnet import load_controlnet_editor
    from .pipelines.multiview_edit import EditView

    e = spec.edit
    controls = e.controls or [Control()]
    kinds = [c.kind for c in controls]
    ed_key = spec.models.editor or "sd15"
    base = "tiny" if ed_key == "sd-tiny" else (spec.models.source or ed_key)
    sources = {c.kind: c.source for c in controls if c.source}
    rep.emit("loading", message=f"loading {ed_key} + ControlNet {', '.join(kinds)}")
    editor = cache.get(
        ("controlnet", ed_key, base, tuple(kinds), tuple(sorted(sources.items())), spec.models.dtype, spec.models.device),
        lambda: load_controlnet_editor(kinds, base=base, sources=sources, dtype=spec.models.dtype, device=spec.models.device),
    )
    # per-job settings on the warm editor
    editor.scales, editor.start, editor.end, editor.strength = [c.scale for c in controls], e.control_start, e.control_end, e.strength

    def load(path: str | None):
        return np.load(job.input_path(path)) if path else None

    def extras(v, rgb: np.ndarray) -> dict:
        passes = dict(rgb=rgb, depth=load(v.depth), normal_world=load(v.normal), c2w=np.array(v.c2w), object_index=load(v.object_index))
        return {k: control_image(k, **passes) for k in kinds}

    def make_view(v, rgba: np.ndarray) -> EditView:
        return EditView(rgba, np.array(v.K), np.array(v.c2w), extras(v, rgba[..., :3]))

    defaults = EditDefaults(lam=0.015, cfg=7.5, steps=30)
    return _edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"stylized: {e.prompt}", defaults)


@dataclass
class EditDefaults:
    """A multi-view edit task's defaults where the job leaves sampling settings out."""

    lam: float
    cfg: float
    steps: int
    step: str = "ddpm"


def _relight_envmap(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    from . import envmap
    from .media import tensor_to_pil
    from .models.editors.neural_gaffer import load_neural_gaffer
    from .pipelines.multiview_edit import EditView
    from .pipelines.object_views import crop_K, crop_rgba, object_crop, paste_back

    e = spec.edit
    ed_key = spec.models.editor or "neural-gaffer"
    source = "tiny" if ed_key.endswith("-tiny") else (spec.models.source or ed_key)
    rep.emit("loading", message=f"loading {ed_key}")
    editor = cache.get(
        ("neural_gaffer", ed_key, source, spec.models.dtype, spec.models.device),
        lambda: load_neural_gaffer(source, dtype=spec.models.dtype, device=spec.models.device),
    )
    lighting = envmap.Lighting(
        envmap.prepare(envmap.read_envmap(job.input_path(e.envmap)), e.envmap_strength), tuple(e.envmap_rotation), e.spin, e.spin_total
    )
    crops: dict[str, object] = {}

    def make_view(v, rgba: np.ndarray) -> EditView:
        crop = crops[v.name] = object_crop(rgba[..., 3])
        hdrn, ldr = envmap.condition_maps(lighting, envmap.opencv_to_blender(np.array(v.c2w)))
        seed = spec.sampling.seed + spec.views.index(v)
        square, K = crop_rgba(rgba, crop), crop_K(np.array(v.K), crop)
        return EditView(square, K, np.array(v.c2w), conditions={"hdrn": hdrn, "ldr": ldr, "seed": seed})

    def finish(v, img) -> Image.Image:
        alpha = np.asarray(Image.open(job.input_path(v.image)).convert("RGBA"))[..., 3]
        plate = None
        if e.composite == "envmap":
            plate = envmap.background_plate(lighting, envmap.opencv_to_blender(np.array(v.c2w)), v.width, v.height, np.array(v.K))
        u8 = np.asarray(tensor_to_pil(img))
        return Image.fromarray(paste_back(u8, crops[v.name], alpha, plate), "RGBA")

    defaults = EditDefaults(lam=0.015, cfg=3.0, steps=50, step="euler")
    name = Path(e.envmap).name
    return _edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"relit by {name}", defaults, finish)


def _spatial_edit(spec: JobSpec, job: JobFolder, rep: _Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    from .coarse_edit import ObjectEdit, coarse_edit
    from .models.editors.magic_fixup import load_magic_fixup
    from .pipelines.multiview_edit import EditView

    ed_key = spec.models.editor or "magicfixup"
    source = "tiny" if ed_key.endswith("-tiny") else (spec.models.source or ed_key)
    rep.emit("loading", message=f"loading {ed_key}")
    editor = cache.get(
        ("magicfixup", ed_key, source, spec.models.dtype, spec.models.device),
        lambda: load_magic_fixup(source, dtype=spec.models.dtype, device=spec.models.device, log=lambda m: rep.emit("loading", message=m)),
    )
    edits = [ObjectEdit(o.index, np.array(o.delta), o.action) for o in spec.edit.objects]
    after_depth: dict[str, np.ndarray] = {}  # the geometry after the edit, for the consistency report
    extra_outputs: list[OutputFile] = []  # the coarse edits, one per view

    def make_view(v, rgba: np.ndarray) -> EditView:
        ce = coarse_edit(rgba[..., :3], np.load(job.input_path(v.depth)), np.load(job.input_path(v.object_index)), np.array(v.K),
                         np.array(v.c2w), edits)  # fmt: skip
        after_depth[v.name] = ce.depth
        name = f"outputs/coarse_{slug(v.name, 60)}.png"
        Image.fromarray(np.clip(ce.rgba, 0, 255).astype(np.uint8), "RGBA").save(job.root / name)
        extra_outputs.append(OutputFile(path=name, kind="image", view=v.name, role="coarse_edit"))
        seed = spec.sampling.seed + spec.views.index(v)
        return EditView(rgba, np.array(v.K), np.array(v.c2w), extras={"edit": ce.rgba}, conditions={"seed": seed})

    defaults = EditDefaults(lam=0.015, cfg=1.0, steps=50, step="ddpm")
    moved = ", ".join(f"{o.action} {o.name or o.index}" for o in spec.edit.objects)
    outputs, meta = _edit_views_job(
        spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"spatial edit: {moved}", defaults, depths=after_depth,
        size=512,  # Magic Fixup's size: SEVA works there too, so both see the same pixels (square for Magic Fixup)
    )  # fmt: skip
    return outputs + extra_outputs, meta


def _edit_views_job(
    spec, job, rep, should_cancel, cache, editor, ed_key: str, make_view, caption: str, d: EditDefaults, finish=None, depths=None, size=None
):
    """A multi-view edit job: views in, SEVA x editor, per-view PNGs, contact sheet, consistency report.

    ``make_view(view, rgba) -> EditView`` prepares a view for the editor; ``finish(view, image)`` turns
    a working-size result into the view's output image (default: resized to the view's size)."""
    import numpy as np
    from PIL import Image

    from .media import save_image, side_by_side, tensor_to_pil
    from .pipelines.multiview_edit import EditSettings, edit_views, resize_to

    seva_key, seva = _load_seva(spec, rep, cache)
    rep.emit("loading", message="preparing views")
    views = []
    for v in spec.views:
        im = Image.open(job.input_path(v.image))
        if "A" not in im.getbands():
            raise ValueError(
                f"view {v.name!r} has no alpha channel: the editors composite the foreground from the exact alpha; "
                "render with a transparent film"
            )
        views.append(make_view(v, np.asarray(im.convert("RGBA"), dtype=np.float64)))
    s, mv = spec.sampling, spec.multiview
    settings = EditSettings(
        prompt=spec.edit.prompt,
        negative_prompt=spec.edit.negative_prompt or None,
        lam=s.lam if s.lam is not None else d.lam,
        steps=s.steps or d.steps,
        cfg_editor=s.cfg_editor if s.cfg_editor is not None else d.cfg,
        cfg_multiview=s.cfg_multiview if s.cfg_multiview is not None else 2.0,
        cfg_min=mv.cfg_min,
        guider=mv.guider,
        camera_scale=mv.camera_scale,
        T=mv.window,
        size=mv.size or size or 576,
        seed=s.seed,
        step=s.step or d.step,
        alignment=s.alignment,
        max_pull=s.max_pull,
    )

    def on_step(label, info) -> None:
        rep.emit("sampling", info.step, info.total, label, info.elapsed_s / info.step * (info.total - info.step))

    res = edit_views(seva, editor, views, spec.reference_view, settings, callback=on_step, should_cancel=should_cancel)
    rep.emit("writing")
    outputs, pils = [], []
    for v, img in zip(spec.views, res.images, strict=True):
        pil = finish(v, img) if finish else tensor_to_pil(resize_to(img, v.width, v.height))
        name = f"outputs/{slug(v.name, 60)}.png"
        save_image(pil, job.root / name)
        pils.append(pil)
        outputs.append(
            OutputFile(path=name, kind="image", view=v.name, role="reference_edit" if v is spec.views[spec.reference_view] else "result")
        )
    originals = [Image.open(job.input_path(v.image)).convert("RGB") for v in spec.views]
    label = " | TINY RANDOM WEIGHTS" if res.metadata["labels"] else ""
    sheet_in = side_by_side(originals, [v.name for v in spec.views], footer="inputs")
    sheet_out = side_by_side(pils, [v.name for v in spec.views], footer=f"{caption} (lam {settings.lam}){label}")
    sheet = Image.new("RGB", (max(sheet_in.width, sheet_out.width), sheet_in.height + sheet_out.height))
    sheet.paste(sheet_in, (0, 0))
    sheet.paste(sheet_out, (0, sheet_in.height))
    sheet.save(job.root / "outputs/contact_sheet.png")
    outputs.append(OutputFile(path="outputs/contact_sheet.png", kind="image", role="side_by_side"))
    meta = res.metadata | {"models": {"multiview": seva_key, "editor": ed_key}, "reference_view": spec.views[spec.reference_view].name}
    if all(v.depth for v in spec.views):
        rep.emit("writing", message="consistency report")
        generated = {v.name: p for v, p in zip(spec.views, pils, strict=True)}
        meta["consistency"] = _consistency_outputs(spec, job, generated, outputs, depths)
    _write_metadata(job, meta)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, meta
