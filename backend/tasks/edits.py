"""The multi-view edit tasks: relight_text, stylize, relight_envmap, spatial_edit (an editor x SEVA)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..jobs import JobFolder, JobSpec, OutputFile
from ..naming import view_stem
from ..registry import MODELS, TASK_DEFAULTS
from .common import Reporter, write_metadata
from .views import consistency_outputs, job_speed, load_seva, sped_up, trained_window_and_size

if TYPE_CHECKING:
    import numpy as np

    from ..model_cache import ModelCache


def relight_text(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    ed_key, editor = load_ic_light_editor(spec, rep, cache)
    background = None
    if spec.edit.background:
        background = np.asarray(Image.open(job.input_path(spec.edit.background)).convert("RGB"), dtype=np.float64)

    def extras(v, rgb: np.ndarray) -> dict:
        if background is None:
            return {}
        h, w = rgb.shape[:2]
        return {"background": np.asarray(Image.fromarray(background.astype(np.uint8)).resize((w, h), 3), dtype=np.float64)}

    caption = f"relit: {spec.edit.prompt}"
    return edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, with_extras(extras), caption)


def load_ic_light_editor(spec: JobSpec, rep: Reporter, cache: ModelCache):
    from ..models.editors.ic_light import load_ic_light

    m = spec.models
    ed = MODELS[m.editor or "ic-light-fc"]
    # the toy editor is a whole pipeline of its own (merged UNet, text encoder, vae-toy)
    base = "tiny" if ed.tiny else ed.key if ed.toy else m.local("ic-light-base", m.source)
    rep.emit("loading", message=f"loading {ed.key}")
    speed = job_speed(m)
    return ed.key, cache.get(
        ("editor", ed.key, base, m.paths.get(ed.key), m.dtype, m.device, speed),
        lambda: unet_sped_up(load_ic_light(ed.variant, base=base, offsets=ed.key, paths=m.paths, dtype=m.dtype, device=m.device),
                             speed, ed.key, rep, cache),
    )  # fmt: skip


def seva_only(m, ed_key: str, rep: Reporter) -> None:
    if (speed := job_speed(m)) != "eager":
        rep.emit("loading", message=f"speed mode {speed} applies to SEVA only: {ed_key} runs eager")


def unet_sped_up(editor, speed: str, name: str, rep: Reporter, cache: ModelCache):
    """A diffusers-pipeline editor (IC-Light, ControlNet) with its UNet in the job's speed mode."""
    editor.pipe.unet = sped_up(editor.pipe.unet, speed, f"{name}-unet", rep, cache)
    return editor


def stylize(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import numpy as np

    from ..models.editors.control_images import control_image

    e = spec.edit
    ed_key, editor = load_controlnet_editor(spec, rep, cache)
    kinds = editor.kinds

    def load(path: str | None):
        return np.load(job.input_path(path)) if path else None

    def extras(v, rgb: np.ndarray) -> dict:
        passes = dict(rgb=rgb, depth=load(v.depth), normal_world=load(v.normal), c2w=np.array(v.c2w), object_index=load(v.object_index))
        return {k: control_image(k, **passes) for k in kinds}

    return edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, with_extras(extras), f"stylized: {e.prompt}")


def load_controlnet_editor(spec: JobSpec, rep: Reporter, cache: ModelCache):
    from ..jobs import Control
    from ..models.editors.controlnet import load_controlnet_editor as load

    e, m = spec.edit, spec.models
    controls = e.controls or [Control()]
    kinds = [c.kind for c in controls]
    ed_key = m.editor or "sd15"
    base = m.local(ed_key, m.source)
    sources = {c.kind: c.source or m.paths.get(f"controlnet-{c.kind}") for c in controls}
    sources = {k: v for k, v in sources.items() if v}
    rep.emit("loading", message=f"loading {ed_key} + ControlNet {', '.join(kinds)}")
    speed = job_speed(m)
    editor = cache.get(
        ("controlnet", ed_key, base, tuple(kinds), tuple(sorted(sources.items())), m.dtype, m.device, speed),
        lambda: unet_sped_up(load(kinds, base=base, sources=sources, dtype=m.dtype, device=m.device), speed, ed_key, rep, cache),
    )
    # per-job settings on the warm editor
    editor.scales, editor.start, editor.end, editor.strength = [c.scale for c in controls], e.control_start, e.control_end, e.strength
    return ed_key, editor


def with_extras(extras):
    """A view builder: the view as it is, plus ``extras(view, rgb)`` (pixel-aligned editor inputs)."""
    import numpy as np

    from ..pipelines.multiview_edit import EditView

    def make_view(v, rgba):
        return EditView(rgba, np.array(v.K), np.array(v.c2w), extras(v, rgba[..., :3]))

    return make_view


def relight_envmap(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    from .. import envmap
    from ..media import tensor_to_pil
    from ..pipelines.multiview_edit import EditView
    from ..pipelines.object_views import crop_K, crop_rgba, object_crop, paste_back

    e = spec.edit
    ed_key, editor = load_gaffer_editor(spec, rep, cache)
    lighting = envmap.Lighting(
        envmap.prepare(envmap.read_envmap(job.input_path(e.envmap)), e.envmap_strength), tuple(e.envmap_rotation), e.spin, e.spin_total
    )
    crops: dict[str, tuple] = {}  # per view: the object's square crop and the render's alpha, for the paste-back

    def make_view(v, rgba: np.ndarray) -> EditView:
        crop = object_crop(rgba[..., 3])
        crops[v.name] = (crop, rgba[..., 3].astype(np.uint8))
        hdrn, ldr = envmap.condition_maps(lighting, envmap.opencv_to_blender(np.array(v.c2w)))
        seed = spec.sampling.seed + spec.views.index(v)
        square, K = crop_rgba(rgba, crop), crop_K(np.array(v.K), crop)
        return EditView(square, K, np.array(v.c2w), conditions={"hdrn": hdrn, "ldr": ldr, "seed": seed})

    def finish(v, img) -> Image.Image:
        crop, alpha = crops[v.name]
        plate = None
        if e.composite == "envmap":
            plate = envmap.background_plate(lighting, envmap.opencv_to_blender(np.array(v.c2w)), v.width, v.height, np.array(v.K))
        u8 = np.asarray(tensor_to_pil(img))
        return Image.fromarray(paste_back(u8, crop, alpha, plate), "RGBA")

    name = Path(e.envmap).name
    return edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"relit by {name}", finish)


def load_gaffer_editor(spec: JobSpec, rep: Reporter, cache: ModelCache):
    from ..models.editors.neural_gaffer import load_neural_gaffer

    m = spec.models
    ed_key = m.editor or "neural-gaffer"
    source, base = m.local(ed_key, m.source), m.local("zero123-xl")
    rep.emit("loading", message=f"loading {ed_key}")
    seva_only(m, ed_key, rep)
    return ed_key, cache.get(
        ("neural_gaffer", ed_key, source, base, m.dtype, m.device),
        lambda: load_neural_gaffer(source, base=base, dtype=m.dtype, device=m.device),
    )


def spatial_edit(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import numpy as np
    from PIL import Image

    from ..coarse_edit import ObjectEdit, coarse_edit
    from ..pipelines.multiview_edit import EditView

    ed_key, editor = load_fixup_editor(spec, rep, cache)
    edits = [ObjectEdit(o.index, np.array(o.delta), o.action) for o in spec.edit.objects]
    after_depth: dict[str, np.ndarray] = {}  # the geometry after the edit, for the consistency report
    extra_outputs: list[OutputFile] = []  # the coarse edits, one per view

    def make_view(v, rgba: np.ndarray) -> EditView:
        ce = coarse_edit(rgba[..., :3], np.load(job.input_path(v.depth)), np.load(job.input_path(v.object_index)), np.array(v.K),
                         np.array(v.c2w), edits)  # fmt: skip
        after_depth[v.name] = ce.depth
        name = f"outputs/coarse_{view_stem(spec.views.index(v), v.name)}.png"
        Image.fromarray(np.clip(ce.rgba, 0, 255).astype(np.uint8), "RGBA").save(job.root / name)
        extra_outputs.append(OutputFile(path=name, kind="image", view=v.name, role="coarse_edit"))
        seed = spec.sampling.seed + spec.views.index(v)
        return EditView(rgba, np.array(v.K), np.array(v.c2w), extras={"edit": ce.rgba}, conditions={"seed": seed})

    moved = ", ".join(f"{o.action} {o.name or o.index}" for o in spec.edit.objects)
    outputs, meta = edit_views_job(
        spec, job, rep, should_cancel, cache, editor, ed_key, make_view, f"spatial edit: {moved}", depths=after_depth,
        size=512,  # Magic Fixup's size: SEVA works there too, so both see the same pixels (square for Magic Fixup)
    )  # fmt: skip
    return outputs + extra_outputs, meta


def load_fixup_editor(spec: JobSpec, rep: Reporter, cache: ModelCache):
    from ..models.editors.magic_fixup import load_magic_fixup

    m = spec.models
    ed_key = m.editor or "magicfixup"
    source = m.local(ed_key, m.source)
    rep.emit("loading", message=f"loading {ed_key}")
    seva_only(m, ed_key, rep)
    return ed_key, cache.get(
        ("magicfixup", ed_key, source, m.dtype, m.device),
        lambda: load_magic_fixup(source, dtype=m.dtype, device=m.device, log=lambda msg: rep.emit("loading", message=msg)),
    )


# each multi-view edit task's editor, as its job loads it (a cluster helper loads the same one)
EDITOR_LOADERS = {
    "relight_text": load_ic_light_editor,
    "stylize": load_controlnet_editor,
    "relight_envmap": load_gaffer_editor,
    "spatial_edit": load_fixup_editor,
}


def edit_views_job(spec, job, rep, should_cancel, cache, editor, ed_key: str, make_view, caption: str, finish=None, depths=None, size=None):
    """A multi-view edit job: views in, SEVA x editor, per-view PNGs, contact sheet, consistency report.

    ``make_view(view, rgba) -> EditView`` prepares a view for the editor; ``finish(view, image)`` turns
    a working-size result into the view's output image (default: resized to the view's size).
    Sampling settings the job leaves out come from the registry's ``TASK_DEFAULTS``."""
    from PIL import Image

    from ..media import save_image, side_by_side, tensor_to_pil
    from ..pipelines.multiview_edit import EditSettings, edit_views, resize_to

    seva_key, seva = load_seva(spec, rep, cache)
    rep.emit("loading", message="preparing views")
    views = []
    for v in spec.views:
        views.append(make_view(v, view_rgba(job, v)))
    s, mv, d = spec.sampling, spec.multiview, TASK_DEFAULTS[spec.task]
    window, work = trained_window_and_size(seva_key, mv, rep, mv.size or size or 576)
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
        T=window,
        size=work,
        seed=s.seed,
        step=s.step or d.step,
        alignment=s.alignment,
        join=s.join,
        max_pull=s.max_pull,
    )

    def on_step(label, info) -> None:
        rep.emit("sampling", info.step, info.total, label, info.elapsed_s / info.step * (info.total - info.step))

    res = edit_views(seva, editor, views, spec.reference_view, settings, callback=on_step, should_cancel=should_cancel, spread=cache.spread)
    rep.emit("writing")
    outputs, pils = [], []
    for i, (v, img) in enumerate(zip(spec.views, res.images, strict=True)):
        pil = finish(v, img) if finish else tensor_to_pil(resize_to(img, v.width, v.height))
        name = f"outputs/{view_stem(i, v.name)}.png"
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
    meta = res.metadata | {"models": {"multiview": seva_key, "editor": ed_key}, "reference_view": spec.views[spec.reference_view].name,
                           "defaults_chosen_by": d.chosen_by}  # fmt: skip
    if all(v.depth for v in spec.views):
        rep.emit("writing", message="consistency report")
        generated = {v.name: p for v, p in zip(spec.views, pils, strict=True)}
        meta["consistency"] = consistency_outputs(spec, job, generated, outputs, depths)
    write_metadata(job, meta)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, meta


def view_rgba(job: JobFolder, v) -> np.ndarray:
    """(H, W, 4) float64 in 0..255: the view's image with its exact alpha, from ``View.alpha`` when the
    view names one (a photo with a separate mask), else from the image's own alpha channel."""
    import numpy as np
    from PIL import Image

    im = Image.open(job.input_path(v.image))
    if v.alpha:
        mask = Image.open(job.input_path(v.alpha))
        mask = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
        rgba = im.convert("RGB")
        rgba.putalpha(mask)
        return np.asarray(rgba, dtype=np.float64)
    if "A" not in im.getbands():
        raise ValueError(
            f"view {v.name!r} has no alpha: the editors composite the foreground from the exact alpha; render with a "
            "transparent film, or give the view an 'alpha' mask file"
        )
    return np.asarray(im.convert("RGBA"), dtype=np.float64)
