"""Loading SEVA weights: hub id or local file/folder, safetensors only, built on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ...registry import MODELS
from ..weights import ModelUnavailable, friendly_hub_errors, weights_file
from .network import SevaConfig, SevaNet

FILENAMES = {"1.0": "model.safetensors", "1.1": "modelv1.1.safetensors"}
CONFIG_FILE = "seva_config.json"  # ours, beside non-default (e.g. tiny) checkpoints


class SevaWeightsError(ModelUnavailable):
    """The file's tensors do not match the network: names the missing, unexpected and mis-shaped keys."""


def _listing(names: list[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f" ... (+{len(names) - n} more)" if len(names) > n else "")


def resolve_weights_file(source: str, version: str = "1.1") -> Path:
    """Registry key, hub repo id, local .safetensors file or local folder -> a local file path."""
    if version not in FILENAMES:
        raise ValueError(f"SEVA version must be one of {sorted(FILENAMES)}, got {version!r}")
    if source in MODELS:
        e = MODELS[source]
        if e.kind != "seva":
            raise ModelUnavailable(f"{source!r} is a {e.kind} model, not SEVA")
        return weights_file(e.key)
    p = Path(source).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise ModelUnavailable(f"{p} is not a .safetensors file; SEVA weights load from safetensors only")
        return p
    if p.is_dir():
        wanted = p / FILENAMES[version]
        if wanted.is_file():
            return wanted
        found = sorted(f.name for f in p.glob("*.safetensors"))
        if len(found) == 1:
            return p / found[0]
        raise ModelUnavailable(f"no SEVA weights in {p}: expected {FILENAMES[version]}" + (f"; found {found}" if found else ""))
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download

        with friendly_hub_errors(source, gated=True, filename=FILENAMES[version]):
            return Path(hf_hub_download(source, FILENAMES[version]))
    raise ModelUnavailable(f"SEVA weights not found: {source!r} is neither a file, a folder nor a hub repo id")


def read_config(weights: Path) -> SevaConfig:
    cfg_path = weights.parent / CONFIG_FILE
    if cfg_path.is_file():
        data = json.loads(cfg_path.read_text())
        return SevaConfig(**data.get("seva_params", data))
    return SevaConfig()


def load_seva(
    source: str = "seva-1.1",
    version: str = "1.1",
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    config: SevaConfig | None = None,
) -> SevaNet:
    """Build SevaNet on ``meta``, then take the file's tensors as they are (``assign``).

    ``dtype=None`` keeps the dtype stored in the file; otherwise every tensor is cast to it.
    Any missing, unexpected or mis-shaped key is an error that lists them by name.
    """
    path = resolve_weights_file(source, version)
    config = config or read_config(path)
    with torch.device("meta"):
        net = SevaNet(config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        names = list(f.keys())
        missing = sorted(set(expected) - set(names))
        unexpected = sorted(set(names) - set(expected))
        if missing or unexpected:
            raise SevaWeightsError(
                f"{path.name} does not match the SEVA network ({len(missing)} missing, {len(unexpected)} unexpected keys). "
                + (f"Missing: {_listing(missing)}. " if missing else "")
                + (f"Unexpected: {_listing(unexpected)}. " if unexpected else "")
                + "Is this a SEVA checkpoint, and does its config match (seva_config.json beside it)?"
            )
        state = {}
        wrong = []
        for k in names:
            t = f.get_tensor(k)
            if tuple(t.shape) != expected[k]:
                wrong.append(f"{k} {tuple(t.shape)} != {expected[k]}")
            state[k] = t.to(dtype) if dtype is not None else t
    if wrong:
        raise SevaWeightsError(f"{path.name}: {len(wrong)} tensors have the wrong shape: {_listing(wrong, 6)}")
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)
