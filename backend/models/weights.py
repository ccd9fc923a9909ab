"""Where weights come from: the hub cache, a local folder, or the tiny random builders.

Hub loading goes through diffusers/huggingface_hub, so the cache, resume, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` behave as users expect. Failures become ``ModelUnavailable`` with a message
that says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..model_needs import cache_marker, in_cache, is_offline  # noqa: F401 - cache_marker, in_cache re-exported
from ..registry import MODELS, ModelEntry, entry

log = logging.getLogger(__name__)
_announced: set[str] = set()


class ModelUnavailable(RuntimeError):
    """The weights cannot be loaded; the message says why and what to do."""


def announce_licence(e: ModelEntry) -> None:
    """Say once per process that a model's weights are for non-commercial use (SEVA, FLUX.1-dev, Magic Fixup)."""
    if e.non_commercial and e.key not in _announced:
        _announced.add(e.key)
        log.warning("%s (%s) is under the %s: non-commercial use only", e.key, e.repo, e.licence)


def weights_location(key: str, paths: Mapping[str, str] | None = None) -> str:
    """What ``from_pretrained`` reads for registry model ``key``: the user's local copy (``paths[key]``,
    which must exist), else its hub repo id (the cache, downloading when allowed)."""
    e = entry(key)
    announce_licence(e)
    local = (paths or {}).get(key)
    if local:
        p = Path(local).expanduser()
        if not p.exists():
            raise ModelUnavailable(f"models.paths[{key!r}]: {p} does not exist; point it at your copy of {e.repo}")
        return str(p)
    if e.bundled:
        return str(bundled_folder(e))
    if e.repo is None:
        raise ModelUnavailable(f"{key!r} is a tiny random model; it has no weights to load")
    return e.repo


def bundled_folder(e: ModelEntry) -> Path:
    """The folder of a toy model shipped in ``backend/toy_models`` (an error says if it is missing)."""
    p = e.bundled_path
    if not p.is_dir():
        raise ModelUnavailable(f"{e.key}: its weights should ship with the code at {p}; reinstall Coupled Edit (or restore the folder)")
    return p


def weights_file(key: str, paths: Mapping[str, str] | None = None, filename: str | None = None) -> Path:
    """One weights file of registry model ``key``: ``paths[key]`` (the file itself, or a folder holding
    it), else the hub cache (downloading when allowed); hub errors say what to do."""
    e = entry(key)
    name = filename or e.filename
    if not name:
        raise ValueError(f"registry entry {key!r} names no file")
    announce_licence(e)
    local = (paths or {}).get(key)
    if local:
        p = Path(local).expanduser()
        if p.is_file():
            return p
        if p.is_dir() and (p / name).is_file():
            return p / name
        raise ModelUnavailable(f"models.paths[{key!r}]: {p} is neither the weights file nor a folder holding {name}")
    if e.bundled:
        return bundled_folder(e) / name
    from huggingface_hub import hf_hub_download

    with friendly_hub_errors(e.repo, gated=e.gated, filename=name):
        return Path(hf_hub_download(e.repo, name, revision=e.revision))


def resolve_source(model: str, source: str | None = None) -> tuple[str, ModelEntry | None]:
    """A registry key, a local folder, or a hub repo id -> (what from_pretrained gets, registry entry).

    ``source`` (a local folder or repo id) overrides where a registry model's weights come from.
    """
    if model in MODELS:
        e = MODELS[model]
        announce_licence(e)
        if source:
            if e.repo is None:
                raise ModelUnavailable(f"{model!r} is a {'toy' if e.toy else 'tiny random'} model; it takes no weights source")
            return str(Path(source).expanduser()) if Path(source).expanduser().exists() else source, e
        if e.bundled:
            return str(bundled_folder(e)), e
        return (e.repo or "tiny"), e
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser()), None
    if "/" in model:
        return model, None
    raise ModelUnavailable(f"unknown model {model!r}: give a registry key ({', '.join(sorted(MODELS))}), a local folder or a hub repo id")


@contextlib.contextmanager
def friendly_hub_errors(repo: str, gated: bool = False, filename: str | None = None) -> Iterator[None]:
    """Turn hub/cache errors into one message that names the repo (and file) and the fix."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - classify below, re-raise the rest untouched
        name = type(e).__name__
        text = str(e)
        offline = is_offline()
        if name == "EntryNotFoundError" or (not offline and "404" in text and "Entry Not Found" in text):
            what = f"file {filename!r}" if filename else "a file it needs"
            raise ModelUnavailable(f"{what} is not in repo {repo} (404): the registry entry or your local path names the wrong file") from e
        if name in ("GatedRepoError",) or "gated" in text.lower() or (gated and "401" in text):
            raise ModelUnavailable(
                f"{repo} is gated: accept its licence on the model's hub page, then log in (`hf auth login`) or set HF_TOKEN"
            ) from e
        if name in ("RepositoryNotFoundError",) or "Repository Not Found" in text:
            raise ModelUnavailable(f"{repo} was not found on the hub: check the id (or the registry entry), or pass a local folder") from e
        if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or offline or "offline" in text.lower():
            raise ModelUnavailable(
                f"{repo} is not in the local cache and this machine is offline (HF_HUB_OFFLINE=1 or no network): "
                "download it once where the hub is reachable (`hf download " + repo + "`), or pass a local folder; "
                "`--model tiny` runs without weights"
            ) from e
        if isinstance(e, (OSError, EnvironmentError)):
            raise ModelUnavailable(f"could not load {repo}: {text.splitlines()[0] if text else name}") from e
        raise


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA (fp16 overflows Flux/Wan and SD VAEs), fp32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def apply_memory_options(pipe, device: torch.device, offload: str, vae_tiling: bool) -> torch.device:
    """Place a diffusers pipeline: on the device, or with model/sequential CPU offload (CUDA only)."""
    if offload != "none" and device.type != "cuda":
        raise ModelUnavailable(f"offload={offload!r} needs a CUDA device; got {device}")
    if offload == "model":
        pipe.enable_model_cpu_offload()
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(device)
    if vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    return pipe._execution_device if offload != "none" else device


def build_pipeline(cls, source: str, entry: ModelEntry | None, dtype: torch.dtype, make_tiny, **from_pretrained_kwargs):
    """A diffusers pipeline: tiny random components (labelled) or ``from_pretrained`` with clear errors.

    Returns (pipeline, labels); ``make_tiny()`` builds the component dict for ``source == "tiny"``.
    """
    if source == "tiny":
        from .tiny import TINY_LABEL

        pipe = cls(**make_tiny())
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        return pipe, [TINY_LABEL]
    with friendly_hub_errors(source, gated=bool(entry and entry.gated)):
        pipe = cls.from_pretrained(source, revision=entry.revision if entry else None, torch_dtype=dtype, **from_pretrained_kwargs)
    return pipe, []


# --- checkpoints published as pickles: tensors only, converted once to safetensors --------------


def load_tensor_pickle(src: str | os.PathLike | bytes, name: str) -> dict[str, torch.Tensor]:
    """A ``torch.save``d flat dict of tensors, read with ``weights_only=True`` (nothing but tensors is
    unpickled; a file holding other objects is refused). Files are memory-mapped."""
    import io
    import pickle

    try:
        if isinstance(src, bytes):
            sd = torch.load(io.BytesIO(src), map_location="cpu", weights_only=True)
        else:
            sd = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ModelUnavailable(
            f"refusing to load {name}: it holds Python objects other than tensors, and unpickling them could run code ({e})"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelUnavailable(f"{name} is not a flat dict of tensors")
    return sd


def converted_cache(kind: str, source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the safetensors conversion of ``source`` lives: <HF_HOME>/coupled_edit/<kind>/<digest>/."""
    import hashlib

    from huggingface_hub import constants

    src = Path(source)
    st = src.stat()
    digest = hashlib.sha256(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(cache_dir or Path(constants.HF_HOME) / "coupled_edit" / kind) / digest


def save_converted(sd: dict[str, torch.Tensor], out: Path) -> Path:
    """Write a state dict as safetensors, atomically (a half-written file is never picked up)."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    tmp.replace(out)
    return out
