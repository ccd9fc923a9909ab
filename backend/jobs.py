"""The job contract (DESIGN §2): ``JobSpec`` in, ``JobResult`` + ``ProgressEvent`` out.

Identical for in-process and server runs. A job is a folder::

    job.json      the JobSpec
    inputs/       files the spec names (view images, alpha, depth, env maps)
    outputs/      files the run wrote
    result.json   the JobResult (written atomically when the run ends)
    log           one JSON progress event per line

Limits (rejected with a message naming the field): at most ``MAX_VIEWS`` views, image sides
``MIN_SIDE``..``MAX_SIDE`` px, steps 1..``MAX_STEPS``, lam 0..``MAX_LAMBDA``, seeds
0..2^32-1, prompts up to ``MAX_PROMPT_CHARS`` characters and ``MAX_PROMPTS`` prompts,
video frames 1..``MAX_FRAMES`` (4k+1 for Wan).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .input_files import check_view_sizes
from .registry import MODELS, TASKS

MAX_VIEWS = 256
MIN_SIDE, MAX_SIDE = 16, 4096
MAX_STEPS = 1000
MAX_LAMBDA = 100.0
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
MAX_PROMPTS = 8
MAX_FRAMES = 257
RIGID_TOL = 1e-4
SCHEMA_VERSION = 1
MAX_FOCAL_PX = 1e6  # beyond this a pinhole is a telescope: a unit mix-up (mm vs px), not a camera
MAX_TRANSLATION = 1e6  # scene units; farther is a broken export (SEVA normalises the rig scale)
# Input file names: a plain name in inputs/ (no folders, no dot files, no control characters).
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")
DEVICES = ("auto", "cpu", "cuda", "mps", *(f"cuda:{i}" for i in range(16)))
IMG2IMG_TASKS = ("stylize", "spatial_edit")  # editors that start from a noised image, part-way down their schedule
CHUNK_STRATEGIES = ("", "gt", "gt-nearest", "gt-ltr", "nearest", "nearest-gt", "interp", "interp-gt")

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description=f"0..{MAX_SEED}")]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, description=f"pixels, {MIN_SIDE}..{MAX_SIDE}")]
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN/inf are refused in every float field, nested lists included
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


def _file_name(v: str | None, what: str = "input file name") -> str | None:
    if v is not None and (not FILE_NAME.fullmatch(v) or ".." in v):
        raise ValueError(f"{what} {v!r} not allowed: use a plain name in inputs/ (letters, digits, '.', '_', '-', ' '), no folders")
    return v


class View(_Strict):
    """One posed view: OpenCV camera (x right, y down, z forward), pixel centres at i + 0.5."""

    name: str = Field(min_length=1, max_length=200)
    width: Side
    height: Side
    K: list[list[float]] = Field(description="3x3 pixel intrinsics [[fx,0,cx],[0,fy,cy],[0,0,1]]")
    c2w: list[list[float]] = Field(description="4x4 camera-to-world, OpenCV convention, rigid")
    image: str | None = Field(None, description="file in inputs/ (PNG/EXR); None until rendered")
    alpha: str | None = None
    depth: str | None = Field(None, description="float32 .npy (H, W): planar depth along the view axis, +inf where nothing is hit")
    normal: str | None = Field(None, description="float32 .npy (H, W, 3): world-space normals")
    object_index: str | None = Field(
        None, description="int32 .npy (H, W): object pass index, 0 = background (names in inputs/objects.json)"
    )

    @field_validator("image", "alpha", "depth", "normal", "object_index")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _file_name(v)

    @field_validator("K")
    @classmethod
    def _k(cls, K: list[list[float]]) -> list[list[float]]:
        a = np.asarray(K, dtype=np.float64)
        if a.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("K must be finite")
        if a[0, 0] <= 0 or a[1, 1] <= 0:
            raise ValueError(f"K focal lengths must be > 0 (got fx={a[0, 0]}, fy={a[1, 1]})")
        if max(a[0, 0], a[1, 1]) > MAX_FOCAL_PX:
            raise ValueError(f"K focal lengths are in pixels and at most {MAX_FOCAL_PX:g} (got fx={a[0, 0]:g}, fy={a[1, 1]:g})")
        if not np.allclose(a[2], [0, 0, 1]) or a[1, 0] != 0:
            raise ValueError("K must be [[fx,s,cx],[0,fy,cy],[0,0,1]] (pinhole)")
        return K

    @field_validator("c2w")
    @classmethod
    def _c2w(cls, m: list[list[float]]) -> list[list[float]]:
        a = np.asarray(m, dtype=np.float64)
        if a.shape != (4, 4):
            raise ValueError(f"c2w must be 4x4, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("c2w must be finite (no NaN/inf)")
        if not np.allclose(a[3], [0, 0, 0, 1], atol=RIGID_TOL):
            raise ValueError("c2w last row must be [0, 0, 0, 1]")
        if np.abs(a[:3, 3]).max() > MAX_TRANSLATION:
            raise ValueError(f"c2w translation must be within {MAX_TRANSLATION:g} scene units of the origin (got {a[:3, 3].tolist()})")
        R = a[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=RIGID_TOL) or np.linalg.det(R) < 0:
            raise ValueError(
                f"c2w must be rigid: rotation orthonormal with det +1 (tolerance {RIGID_TOL}); remove scale/shear from the camera"
            )
        return m

    @model_validator(mode="after")
    def _frame(self) -> View:
        cx, cy = self.K[0][2], self.K[1][2]
        if not (0 < cx < self.width and 0 < cy < self.height):
            raise ValueError(
                f"image size {self.width}x{self.height} does not match K: principal point ({cx:g}, {cy:g}) must lie inside the image"
            )
        return self


class Sampling(_Strict):
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description=f"1..{MAX_STEPS}; None: the model's default")
    lam: float | None = Field(None, ge=0.0, le=MAX_LAMBDA, description=f"coupling strength 0..{MAX_LAMBDA}; None: the task's default")
    step: Literal["ddpm", "euler"] | None = Field(None, description="None: the task's default (Euler for flow models, DDPM otherwise)")
    alignment: Literal["step", "sigma"] = "step"
    join: Literal["noise", "partner"] = Field(
        "noise", description="alignment='sigma': a participant joining late starts from noise or from its partner's prediction"
    )
    max_pull: float | None = Field(0.5, gt=0.0, le=1.0)
    seed: Seed = 0
    cfg_editor: float | None = Field(None, ge=0.0, le=50.0, description="editor / generator guidance; None: model default")
    cfg_multiview: float | None = Field(None, ge=0.0, le=50.0)
    true_cfg: float = Field(1.0, ge=1.0, le=50.0, description="Flux: real CFG with edit.negative_prompt when > 1 (two calls per step)")


class Control(_Strict):
    """One ControlNet of a ``stylize`` job; its condition image is computed from the views' passes."""

    kind: Literal["depth", "normal", "canny", "lineart", "tile"] = "depth"
    scale: float = Field(1.0, ge=0.0, le=5.0, description="controlnet_conditioning_scale")
    source: str | None = Field(None, max_length=1000, description="local folder or hub id; None: the registry's controlnet-<kind>")


class ObjectMove(_Strict):
    """One object edit of a ``spatial_edit`` job (the object is found by its pass index in the views)."""

    index: int = Field(ge=1, description="the object's pass index in the views' object_index maps (0 = background)")
    name: str = Field("", max_length=200, description="for people reading the job; inputs/objects.json maps indices to names")
    delta: list[list[float]] = Field(
        default_factory=lambda: np.eye(4).tolist(), description="4x4 world transform after @ inverse(before); identity to delete"
    )
    action: Literal["move", "duplicate", "delete"] = "move"

    @field_validator("delta")
    @classmethod
    def _delta(cls, m: list[list[float]]) -> list[list[float]]:
        a = np.asarray(m, dtype=np.float64)
        if a.shape != (4, 4) or not np.isfinite(a).all() or not np.allclose(a[3], [0, 0, 0, 1]):
            raise ValueError("delta must be a finite 4x4 affine transform with last row [0, 0, 0, 1]")
        if abs(np.linalg.det(a[:3, :3])) < 1e-9:
            raise ValueError("delta must be invertible (no zero scale)")
        return m


# which view pass each control kind reads (besides the image every stylize view has)
CONTROL_PASSES = {"depth": "depth", "normal": "normal", "lineart": "depth"}


class Edit(_Strict):
    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    controls: list[Control] = Field(default_factory=list, max_length=4, description="stylize: ControlNets; empty = one depth ControlNet")
    strength: float = Field(0.75, gt=0.0, le=1.0, description="stylize: img2img strength (1 = start from noise)")
    control_start: float = Field(0.0, ge=0.0, lt=1.0, description="stylize: fraction of the run where the ControlNets start")
    control_end: float = Field(1.0, gt=0.0, le=1.0)
    background: str | None = Field(None, description="relight_text with ic-light-fbc: background image in inputs/, used for every view")
    envmap_rotation: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="relight_envmap: the World's Mapping rotation (Euler XYZ radians, type POINT)"
    )
    envmap_strength: float = Field(1.0, ge=0.0, le=1e6, description="relight_envmap: World strength (multiplies the map)")
    spin: int = Field(0, ge=0, description="relight_envmap: turntable spin frame k of spin_total (turns the lighting 360 k / N degrees)")
    spin_total: int = Field(120, ge=1, le=100_000)
    objects: list[ObjectMove] = Field(default_factory=list, max_length=64, description="spatial_edit: the object moves to propagate")
    composite: Literal["envmap", "transparent"] = Field(
        "envmap", description="relight_envmap: what shows behind the object: the environment seen by each camera, or nothing"
    )
    prompts: list[Prompt] = Field(default_factory=list, max_length=MAX_PROMPTS, description="for couple_* tasks, one per sample")
    seeds: list[Seed] = Field(default_factory=list, description="one per prompt (couple_* tasks); default seed, seed+1, ...")
    envmap: str | None = Field(None, description="relight_envmap: equirectangular .hdr/.exr in inputs/ (Blender's convention)")
    chain: bool = Field(False, description="couple prompts in a chain (0-1, 1-2, ...) instead of all pairs")

    @field_validator("background", "envmap")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _file_name(v)


class Multiview(_Strict):
    """SEVA settings (research/seva.md §4.5, §4.8); defaults are the reference demo's."""

    window: int = Field(21, ge=2, le=64, description="frames per SEVA call (T)")
    guider: int = Field(1, ge=0, le=2, description="0 vanilla CFG, 1 multiview, 2 multiview-temporal")
    cfg_min: float = Field(1.2, ge=0.0, le=50.0)
    camera_scale: float = Field(2.0, gt=0.0, le=100.0)
    passes: int = Field(1, ge=1, le=2, description="2: anchors first, then interpolation (orbits, long trajectories)")
    chunk_strategy: Literal[CHUNK_STRATEGIES] = Field("", description="'' = nearest-gt (1 pass) / interp (2 passes)")
    size: int | None = Field(
        None, ge=64, le=2048, description="working short side in pixels (long side to a multiple of 64); None: 576, spatial_edit 512"
    )


class Output(_Strict):
    width: Side | None = None
    height: Side | None = None
    fps: int = Field(16, ge=1, le=120)
    frames: int | None = Field(None, ge=1, le=MAX_FRAMES, description=f"video frames 1..{MAX_FRAMES}")


class Models(_Strict):
    editor: str | None = None
    multiview: str | None = None
    generator: str | None = None
    source: str | None = Field(
        None, max_length=1000, description="local folder/file (or hub id) with the weights of the editor or generator (not SEVA)"
    )
    multiview_source: str | None = Field(None, max_length=1000, description="local file/folder (or hub id) with SEVA's weights")
    paths: dict[str, Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=dict,
        max_length=64,
        description="registry key -> local file or folder with that model's weights, for any model a task loads "
        "(e.g. seva-vae, seva-clip, ic-light-fc, ic-light-base, zero123-xl, controlnet-depth, magicfixup)",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal[DEVICES] = "auto"
    offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False
    speed: Literal["auto", "eager", "fp8", "compile", "compile-fp8", "compile-regional"] = Field(
        "auto",
        description="SEVA's network and the editor's UNet: eager, fp8 linear layers, torch.compile (artefacts cached on "
        "disk), or both; compile-regional = each repeated block compiled (for a shorter warm-up; unmeasured on a GPU); "
        "auto = the fastest mode measured to stay within bf16's error (backend/models/speed.py)",
    )

    @field_validator("editor", "multiview", "generator")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in MODELS:
            raise ValueError(f"unknown model {v!r}; known models: {', '.join(sorted(MODELS))}")
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(k for k in v if k not in MODELS or MODELS[k].tiny)
        if unknown:
            known = ", ".join(k for k in MODELS if not MODELS[k].tiny)
            raise ValueError(f"paths: {unknown} are not registry models with weights; known: {known}")
        return v

    def local(self, key: str, fallback: str | None = None) -> str:
        """Where registry model ``key`` loads from: its entry in ``paths``, else ``fallback``
        (``source``/``multiview_source``), else the key itself (the hub); "tiny" for random models."""
        if MODELS[key].tiny:
            return "tiny"
        return self.paths.get(key) or fallback or key


class JobSpec(_Strict):
    schema_version: Literal[SCHEMA_VERSION] = Field(
        SCHEMA_VERSION, description=f"{SCHEMA_VERSION}: the only job format this backend reads (update the add-on or the backend)"
    )
    task: str
    views: list[View] = Field(default_factory=list, max_length=MAX_VIEWS)
    reference_view: int = Field(0, ge=0)
    edit: Edit = Field(default_factory=Edit)
    sampling: Sampling = Field(default_factory=Sampling)
    models: Models = Field(default_factory=Models)
    output: Output = Field(default_factory=Output)
    multiview: Multiview = Field(default_factory=Multiview)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; known tasks: {', '.join(sorted(TASKS))}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        needs_views = TASKS[self.task]["views"]
        if needs_views and not self.views:
            raise ValueError(f"task {self.task!r} needs at least one view in 'views'")
        if self.views and self.reference_view >= len(self.views):
            raise ValueError(
                f"reference_view {self.reference_view} is out of range: 'views' has {len(self.views)} entries (0..{len(self.views) - 1})"
            )
        names = [v.name for v in self.views]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"views: duplicate view names {dups}; every view needs a unique name")
        if self.task.startswith("couple_"):
            if len(self.edit.prompts) < 2:
                raise ValueError(f"edit.prompts: task {self.task!r} needs at least 2 prompts")
            if self.edit.seeds and len(self.edit.seeds) != len(self.edit.prompts):
                raise ValueError(f"edit.seeds: give one seed per prompt ({len(self.edit.prompts)}) or none")
            kinds = ("wan",) if self.task == "couple_videos" else ("flux", "sd")
            gen = self.models.generator
            if gen is None or MODELS[gen].kind not in kinds:
                allowed = sorted(k for k, e in MODELS.items() if e.kind in kinds)
                raise ValueError(f"models.generator: task {self.task!r} needs one of {allowed}, got {gen!r}")
        if self.task in ("relight_text", "stylize"):
            if not self.edit.prompt.strip():
                example = "sunset over the sea" if self.task == "relight_text" else "a watercolor painting"
                raise ValueError(f"edit.prompt: task {self.task!r} needs a prompt, e.g. {example!r}")
            no_image = [v.name for v in self.views if not v.image]
            if no_image:
                raise ValueError(f"views: task {self.task!r} edits every view, so each needs an image; missing for {no_image}")
            want = "ic_light" if self.task == "relight_text" else "sd"
            if self.models.editor is not None and MODELS[self.models.editor].kind != want:
                raise ValueError(f"models.editor: {self.models.editor!r} is not a model of kind {want!r} (task {self.task!r})")
        fbc = self.models.editor is not None and MODELS[self.models.editor].variant == "fbc"
        if self.task == "relight_text" and fbc and not self.edit.background:
            raise ValueError(f"edit.background: IC-Light fbc ({self.models.editor!r}) needs a background image in inputs/")
        if self.task == "relight_text" and not fbc and self.edit.background:
            raise ValueError("edit.background is only used by IC-Light fbc: set models.editor to 'ic-light-fbc' or drop it")
        if self.task == "relight_envmap":
            if not self.edit.envmap:
                raise ValueError("edit.envmap: task 'relight_envmap' needs an environment map (.hdr/.exr) in inputs/")
            no_image = [v.name for v in self.views if not v.image]
            if no_image:
                raise ValueError(f"views: task 'relight_envmap' relights every view, so each needs an image; missing for {no_image}")
            if self.models.editor is not None and MODELS[self.models.editor].kind != "neural_gaffer":
                raise ValueError(f"models.editor: {self.models.editor!r} is not a Neural Gaffer model (task 'relight_envmap')")
            if self.edit.spin >= self.edit.spin_total:
                raise ValueError(f"edit.spin must be below edit.spin_total ({self.edit.spin_total})")
        if self.task == "spatial_edit":
            if not self.edit.objects:
                raise ValueError("edit.objects: task 'spatial_edit' needs at least one object move, duplicate or delete")
            lacking = [v.name for v in self.views if not (v.image and v.depth and v.object_index)]
            if lacking:
                raise ValueError(
                    f"views: task 'spatial_edit' warps every view with its exact depth and object index; image, depth or "
                    f"object_index missing for {lacking}"
                )
            if self.models.editor is not None and MODELS[self.models.editor].kind != "magicfixup":
                raise ValueError(f"models.editor: {self.models.editor!r} is not a Magic Fixup model (task 'spatial_edit')")
        if self.task == "stylize":
            if self.edit.control_end <= self.edit.control_start:
                raise ValueError("edit.control_end must be greater than edit.control_start")
            for c in self.edit.controls or [Control()]:
                attr = CONTROL_PASSES.get(c.kind)
                lacking = [v.name for v in self.views if attr and not getattr(v, attr)]
                if lacking:
                    raise ValueError(f"edit.controls: the {c.kind} ControlNet needs the {attr} pass of every view; missing for {lacking}")
        if self.task == "novel_views":
            with_image = [v for v in self.views if v.image]
            if not with_image or len(with_image) == len(self.views):
                raise ValueError("views: task 'novel_views' needs input views with an image and target views without one")
            if self.models.multiview is not None and MODELS[self.models.multiview].kind != "seva":
                raise ValueError(f"models.multiview: {self.models.multiview!r} is not a SEVA model")
        if self.sampling.alignment == "sigma" and self.task in IMG2IMG_TASKS:
            raise ValueError(
                f"sampling.alignment: task {self.task!r} runs an img2img editor that starts part-way at its strength "
                "(ControlNet img2img, Magic Fixup from the noised coarse edit), which only the 'step' alignment keeps; use 'step'"
            )
        if self.sampling.join != "noise" and (self.sampling.alignment != "sigma" or self.task.startswith("couple_")):
            raise ValueError(
                "sampling.join: only a multi-view edit with alignment 'sigma' has participants joining late; "
                "set alignment to 'sigma' or leave join at 'noise'"
            )
        if not self.task.startswith("couple_") and (self.models.offload != "none" or self.models.vae_tiling):
            raise ValueError(
                f"models.offload / models.vae_tiling apply to the couple_* tasks (diffusers pipelines); task {self.task!r} keeps "
                "SEVA and its editor on the device: leave them at their defaults ('none', false)"
            )
        if self.task == "couple_videos" and self.output.frames is not None and (self.output.frames - 1) % 4:
            raise ValueError(f"output.frames must be 4k+1 for video (Wan's VAE), got {self.output.frames}")
        return self


class OutputFile(_Strict):
    path: str = Field(description="relative to the job folder")
    kind: Literal["image", "video", "latent", "json", "other"] = "image"
    view: str | None = None
    role: str = Field("result", description="result, side_by_side, reference_edit, preview ...")


class JobResult(_Strict):
    job_id: str
    status: Literal["done", "failed", "cancelled", "interrupted"]
    outputs: list[OutputFile] = Field(default_factory=list)
    metadata: dict = Field(default_factory=dict, description="models, revisions, seeds, lam, alignment, timings, labels")
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


class ProgressEvent(_Strict):
    job_id: str = ""
    stage: str = Field(description="loading, encoding, sampling, decoding, writing, done, failed, cancelled")
    step: int = 0
    total: int = 0
    message: str = ""
    elapsed_s: float = 0.0
    eta_s: float | None = None
    time: float = Field(default_factory=time.time)


class JobSpecError(ValueError):
    """A spec that failed validation; ``str()`` lists one 'field: problem' per line."""


def parse_spec(data: dict | str | bytes) -> JobSpec:
    """Validate a spec from a dict or JSON text, raising ``JobSpecError`` with field-named messages."""
    try:
        if isinstance(data, (str, bytes)):
            return JobSpec.model_validate_json(data)
        return JobSpec.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}")
        raise JobSpecError("invalid job spec:\n  " + "\n  ".join(lines)) from None


def json_schema() -> dict:
    return JobSpec.model_json_schema()


# --- job folders ----------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JobFolder:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def job_id(self) -> str:
        return self.root.name

    inputs = property(lambda self: self.root / "inputs")
    outputs = property(lambda self: self.root / "outputs")
    spec_path = property(lambda self: self.root / "job.json")
    result_path = property(lambda self: self.root / "result.json")
    log_path = property(lambda self: self.root / "log")

    @classmethod
    def create(cls, root: str | os.PathLike, spec: JobSpec, files: dict[str, str | os.PathLike | bytes] | None = None) -> JobFolder:
        """Lay out a new job; ``files`` maps names used in the spec to source paths or bytes."""
        job = cls(root)
        if job.spec_path.exists():
            raise FileExistsError(f"{job.root} already holds a job; choose a new folder")
        job.inputs.mkdir(parents=True, exist_ok=True)
        job.outputs.mkdir(parents=True, exist_ok=True)
        for name, src in (files or {}).items():
            dest = job.input_path(name)
            if isinstance(src, bytes):
                dest.write_bytes(src)
            else:
                shutil.copyfile(src, dest)
        missing = [n for n in job.referenced_inputs(spec) if not job.input_path(n).exists()]
        if missing:
            raise FileNotFoundError(f"the spec names input files that were not given: {missing}")
        check_view_sizes(job.inputs, spec.views)
        atomic_write_text(job.spec_path, spec.model_dump_json(indent=2))
        job.log_path.touch()
        return job

    def input_path(self, name: str) -> Path:
        p = (self.inputs / name).resolve()
        if self.inputs.resolve() not in p.parents:
            raise ValueError(f"input file name {name!r} must stay inside inputs/")
        return p

    @staticmethod
    def referenced_inputs(spec: JobSpec) -> list[str]:
        names = [getattr(v, k) for v in spec.views for k in ("image", "alpha", "depth", "normal", "object_index")]
        names += [spec.edit.envmap, spec.edit.background]
        return [n for n in names if n]

    def spec(self) -> JobSpec:
        return parse_spec(self.spec_path.read_text(encoding="utf-8"))

    def write_result(self, result: JobResult) -> None:
        atomic_write_text(self.result_path, result.model_dump_json(indent=2))

    def result(self) -> JobResult | None:
        if not self.result_path.exists():
            return None
        return JobResult.model_validate_json(self.result_path.read_text(encoding="utf-8"))

    def append_log(self, event: ProgressEvent) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(event.model_dump_json() + "\n")

    def events(self) -> list[ProgressEvent]:
        if not self.log_path.exists():
            return []
        return [ProgressEvent.model_validate_json(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dump_schema(path: str | os.PathLike) -> None:
    atomic_write_text(Path(path), json.dumps(json_schema(), indent=2) + "\n")
