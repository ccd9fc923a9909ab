"""Which weights a job will load, and which of them are not on this machine yet.

Standard library + the registry only (``huggingface_hub`` is imported when a cache is checked), so
the Blender add-on can ask before it renders a single view, whatever Python it runs in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .registry import MODELS, ModelEntry

# what each multi-view task loads besides SEVA (+ its VAE and CLIP): editor default and its companions
_EDITOR = {
    "relight_text": ("ic-light-fc", ("ic-light-base",)),
    "stylize": ("sd15", ()),
    "relight_envmap": ("neural-gaffer", ("zero123-xl",)),
    "spatial_edit": ("magicfixup", ()),
}


def job_model_keys(task: str, models: Mapping | None = None, edit: Mapping | None = None) -> list[str]:
    """Registry keys of every model with weights that ``task`` loads with these ``models``/``edit`` sections,
    minus those the job points at local copies (``paths``, ``source``, ``multiview_source``)."""
    m, e = dict(models or {}), dict(edit or {})
    paths = m.get("paths") or {}
    keys: list[str] = []
    if task.startswith("couple_"):
        if m.get("generator") and not m.get("source"):
            keys.append(m["generator"])
    else:
        seva = m.get("multiview") or "seva-1.1"
        if not m.get("multiview_source"):
            keys.append(seva)
        if not MODELS[seva].tiny:
            keys += [MODELS[seva].defaults.get("vae", "seva-vae"), MODELS[seva].defaults.get("clip", "seva-clip")]
        if task in _EDITOR:
            default, companions = _EDITOR[task]
            editor = MODELS[m.get("editor") or default]
            if editor.tiny or editor.toy:
                pass  # built offline or shipped, companions included
            elif editor.kind == "ic_light":  # models.source replaces IC-Light's SD base; its offsets come from its entry
                keys += [editor.key] + ([] if m.get("source") else list(companions))
            elif not m.get("source"):  # models.source replaces the editor itself
                keys += [editor.key, *companions]
            else:
                keys += list(companions)
            if task == "stylize" and not editor.tiny:  # sd-tiny builds its ControlNets from its own UNet
                keys += [f"controlnet-{c.get('kind', 'depth')}" for c in (e.get("controls") or [{}]) if not c.get("source")]
    return [k for k in dict.fromkeys(keys) if k in MODELS and MODELS[k].downloadable and k not in paths]


def is_offline() -> bool:
    """HF_HUB_OFFLINE is set to anything but an empty or false value (the one rule for backend and add-on)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no")


def cache_marker(entry: ModelEntry) -> str:
    """The file whose presence in the hub cache means the model is there."""
    if entry.filename:
        return entry.filename
    # single models (a VAE, CLIP, a ControlNet) have config.json; pipelines have model_index.json
    name = "config.json" if entry.kind in ("vae", "clip", "controlnet") else "model_index.json"
    return f"{entry.subfolder}/{name}" if entry.subfolder else name


def in_cache(entry: ModelEntry) -> bool:
    """True when the model's weights are in the local Hugging Face cache (no network is used).

    Reads the cache's layout with the standard library, from the environment as it is now: Blender's
    Python may lack huggingface_hub, and huggingface_hub fixes its cache folder when first imported,
    so a changed Model Cache preference would go unseen."""
    if entry.bundled:
        return entry.bundled_path.exists()  # toy models ship with the code
    if entry.repo is None:
        return True  # tiny models are built, never downloaded
    return _cached_file(entry.repo, cache_marker(entry), entry.revision) is not None


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps models: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _cached_file(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached copy of ``filename`` (refs/<revision> -> snapshots/<commit>/filename), as huggingface_hub lays it out."""
    root = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    ref = root / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "")
    path = root / "snapshots" / commit / filename
    return path if commit and path.is_file() else None


def missing_models(task: str, models: Mapping | None = None, edit: Mapping | None = None) -> list[str]:
    """The job's models that are neither local copies nor in the hub cache."""
    m = dict(models or {})
    for field in ("source", "multiview_source"):
        if m.get(field) and not Path(m[field]).expanduser().exists() and "/" not in m[field]:
            raise FileNotFoundError(f"models.{field}: {m[field]} does not exist")
    return [k for k in job_model_keys(task, m, edit) if not in_cache(MODELS[k])]


def missing_message(keys: list[str]) -> str:
    """One message naming every missing model, with what to do from Blender or a script."""
    parts = []
    for k in keys:
        e = MODELS[k]
        how = f"accept its licence at https://huggingface.co/{e.repo} first, then " if e.gated else ""
        parts.append(f"{k} ({e.repo}; {how}download it)")
    return (
        f"{len(keys)} model(s) not on this machine and the hub is offline: " + "; ".join(parts) + ". Download them where the hub is "
        "reachable (Python: huggingface_hub.snapshot_download(repo_id)), or point the job at your copies "
        "(models.paths = {key: folder}); the tiny models run without weights."
    )
