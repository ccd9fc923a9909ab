"""Tasks couple_images and couple_videos: N prompts of one generator, coupled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import JobFolder, JobSpec, OutputFile
from ..registry import TASK_DEFAULTS
from .common import Reporter, slug, write_metadata

if TYPE_CHECKING:
    from ..model_cache import ModelCache


def load_key(spec: JobSpec) -> tuple:
    m = spec.models
    return (spec.task, m.generator, m.paths.get(m.generator) or m.source, m.dtype, m.device, m.offload, m.vae_tiling)


def load_generator(spec: JobSpec, rep: Reporter, cache: ModelCache, loader):
    m = spec.models
    rep.emit("loading", message=f"loading {m.generator}")
    source = m.paths.get(m.generator) or m.source
    kwargs = dict(source=source, dtype=m.dtype, device=m.device, offload=m.offload, vae_tiling=m.vae_tiling)
    return cache.get(load_key(spec), lambda: loader(m.generator, **kwargs))


def prompt_request_fields(spec: JobSpec) -> dict:
    """What image and video requests share: prompts, seeds, lam, steps, size, guidance, chain."""
    e, s = spec.edit, spec.sampling
    return dict(
        prompts=e.prompts,
        lam=s.lam if s.lam is not None else TASK_DEFAULTS[spec.task].lam,
        seeds=e.seeds or [s.seed + i for i in range(len(e.prompts))],
        steps=s.steps,
        width=spec.output.width,
        height=spec.output.height,
        guidance=s.cfg_editor,
        negative_prompt=e.negative_prompt,
        chain=e.chain,
        max_pull=s.max_pull,
    )


def couple_images(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    from ..media import side_by_side
    from ..pipelines.coupled_t2i import ImageRequest, load_t2i
    from ..pipelines.coupled_t2i import couple_images as sample_images

    model = load_generator(spec, rep, cache, load_t2i)
    req = ImageRequest(
        **prompt_request_fields(spec),
        true_cfg=spec.sampling.true_cfg,
        step=spec.sampling.step or ("euler" if model.family == "flux" else "ddpm"),
        alignment=spec.sampling.alignment,
    )
    res = sample_images(model, req, callback=rep.step, should_cancel=should_cancel)
    rep.emit("writing")
    outputs = []
    for i, (img, prompt) in enumerate(zip(res.images, req.prompts, strict=True)):
        name = f"outputs/image_{i:02d}_{slug(prompt)}.png"
        img.save(job.root / name)
        outputs.append(OutputFile(path=name, kind="image", role="result"))
    footer = f"lam {req.lam}" + (" | TINY RANDOM WEIGHTS" if model.labels else "")
    side_by_side(res.images, req.prompts, footer=footer).save(job.root / "outputs/side_by_side.png")
    outputs.append(OutputFile(path="outputs/side_by_side.png", kind="image", role="side_by_side"))
    write_metadata(job, res.metadata)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, res.metadata


def couple_videos(spec: JobSpec, job: JobFolder, rep: Reporter, should_cancel, cache: ModelCache):
    import numpy as np

    from ..media import to_uint8, write_video
    from ..pipelines.coupled_t2v import VideoRequest, load_t2v
    from ..pipelines.coupled_t2v import couple_videos as sample_videos

    model = load_generator(spec, rep, cache, load_t2v)
    req = VideoRequest(**prompt_request_fields(spec), frames=spec.output.frames, step=spec.sampling.step or "euler")
    res = sample_videos(model, req, callback=rep.step, should_cancel=should_cancel)
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
    write_metadata(job, res.metadata)
    outputs.append(OutputFile(path="outputs/metadata.json", kind="json", role="metadata"))
    return outputs, res.metadata
