"""Where weights come from (issue 14, "real weights"): local paths for every model a task loads, the
hub cache checked with the file each repo really has, clear messages, licences said once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs import JobFolder, parse_spec
from backend.models import tiny
from backend.models.weights import ModelUnavailable, friendly_hub_errors, in_cache, weights_file, weights_location
from backend.registry import MODELS
from backend.runner import run_job


def put_in_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The huggingface_hub cache layout (refs/main -> snapshots/<commit>/<file>), as a download leaves it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs/main").write_text(commit)
    for name, data in files.items():
        f = root / "snapshots" / commit / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_the_cache_check_looks_for_the_file_each_repo_has(hub_cache):
    cn, mfx, schnell = MODELS["controlnet-depth"], MODELS["magicfixup"], MODELS["flux-schnell"]
    assert not in_cache(cn)
    put_in_hub_cache(hub_cache, cn.repo, {"config.json": b"{}", "diffusion_pytorch_model.safetensors": b""})
    assert in_cache(cn)  # ControlNet repos have config.json, not model_index.json
    put_in_hub_cache(hub_cache, mfx.repo, {"magicfu_weights": b"x"})
    assert in_cache(mfx) and mfx.filename == "magicfu_weights"
    assert schnell.gated and not schnell.non_commercial
    assert {k for k, e in MODELS.items() if e.non_commercial} == {"seva-1.1", "seva-1.0", "flux-dev", "magicfixup"}


def test_a_missing_file_names_the_file_and_the_repo():
    from huggingface_hub.errors import EntryNotFoundError

    with pytest.raises(ModelUnavailable, match=r"file 'model.bin' is not in repo org/repo \(404\)"):
        with friendly_hub_errors("org/repo", filename="model.bin"):
            raise EntryNotFoundError("404 Client Error. Entry Not Found for url: https://example.invalid/org/repo/model.bin")


def test_non_commercial_licences_are_said_once(caplog, tmp_path):
    from backend.models import weights

    weights._announced.discard("seva-1.1")
    with caplog.at_level(logging.WARNING, logger="backend.models.weights"):
        for _ in range(3):
            weights_location("seva-1.1", {"seva-1.1": str(tmp_path)})
        weights_location("seva-vae", {"seva-vae": str(tmp_path)})
    said = [r.getMessage() for r in caplog.records if "non-commercial" in r.getMessage()]
    assert len(said) == 1 and "seva-1.1" in said[0] and "Stability AI Non-Commercial" in said[0]


def test_local_paths_are_checked_and_accept_a_file_or_its_folder(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"models.paths\['seva-vae'\]: .* does not exist"):
        weights_location("seva-vae", {"seva-vae": str(tmp_path / "nowhere")})
    (tmp_path / "iclight_sd15_fc.safetensors").write_bytes(b"x")
    assert weights_file("ic-light-fc", {"ic-light-fc": str(tmp_path)}) == tmp_path / "iclight_sd15_fc.safetensors"
    assert weights_file("ic-light-fc", {"ic-light-fc": str(tmp_path / "iclight_sd15_fc.safetensors")}).is_file()
    with pytest.raises(ModelUnavailable, match="neither the weights file nor a folder holding iclight_sd15_fbc.safetensors"):
        weights_file("ic-light-fbc", {"ic-light-fbc": str(tmp_path)})
    with pytest.raises(Exception, match=r"paths: \['seva-tiny'\] are not registry models with weights"):
        parse_spec({"task": "couple_images", "edit": {"prompts": ["a", "b"]},
                    "models": {"generator": "flux-tiny", "paths": {"seva-tiny": "x"}}})  # fmt: skip


def _save_local_copies(root: Path) -> dict:
    """The tiny models, written to disk in the published layouts: what a user who downloads by hand has."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from backend.models.editors.ic_light import CHANNELS, widen_conv_in
    from backend.models.seva.encoders import tiny_seva, tiny_seva_config
    from backend.models.seva.loader import CONFIG_FILE

    seva = tiny_seva()
    (root / "seva").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in seva.net.state_dict().items()}, str(root / "seva/modelv1.1.safetensors"))
    cfg = tiny_seva_config()
    (root / "seva" / CONFIG_FILE).write_text(json.dumps({"seva_params": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}))
    seva.vae.vae.save_pretrained(root / "vae")
    seva.clip.model.save_pretrained(root / "clip")
    pipe = StableDiffusionPipeline(**tiny.sd_components())
    pipe.save_pretrained(root / "sd")
    widen_conv_in(pipe.unet, CHANNELS["fc"])
    save_file(tiny.offsets_like(pipe.unet.state_dict(), seed=7), str(root / "iclight_sd15_fc.safetensors"))
    return {
        "multiview_source": str(root / "seva"),  # SEVA's own field: models.source is the editor's
        "source": str(root / "sd"),
        "paths": {"seva-vae": str(root / "vae"), "seva-clip": str(root / "clip"), "ic-light-fc": str(root / "iclight_sd15_fc.safetensors")},
    }


def test_a_relight_job_loads_every_model_from_local_paths(tmp_path, hub_cache):
    """Real registry keys (seva-1.1, ic-light-fc), every file local, offline with an empty hub cache: the job
    loads SEVA, its VAE and CLIP, the SD base and the IC-Light offsets from the user's folders, and gives
    what the tiny builders (the same tensors) give."""
    from test_multiview_edit import K, rig

    local = _save_local_copies(tmp_path / "weights")
    views, files = [], {}
    for i, v in enumerate(rig(4)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        views.append({"name": f"cam {i}", "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"})
    base = {"task": "relight_text", "views": views, "edit": {"prompt": "window light"}, "sampling": {"steps": 2, "lam": 0.05},
            "multiview": {"window": 4, "size": 64}}  # fmt: skip
    models = {"multiview": "seva-1.1", "editor": "ic-light-fc", **local}
    real = JobFolder.create(tmp_path / "real", parse_spec(base | {"models": models}), files)
    res = run_job(real)
    assert res.status == "done", res.error
    assert res.metadata["labels"] == []  # real loaders, not the tiny builders
    toy = JobFolder.create(tmp_path / "toy", parse_spec(base | {"models": {"multiview": "seva-tiny", "editor": "ic-light-tiny"}}), files)
    assert run_job(toy).status == "done"
    for o in res.outputs:
        if o.view:
            a = np.asarray(Image.open(real.root / o.path), dtype=np.int16)
            b = np.asarray(Image.open(toy.root / o.path), dtype=np.int16)
            assert np.abs(a - b).max() <= 1, o.path
    # a local path for the editor no longer breaks SEVA (one models.source used to serve both)
    assert "seva" in json.loads((real.root / "outputs/metadata.json").read_text())["models"]["multiview"]


def test_magic_fixup_loads_the_hub_file_magicfu_weights(tmp_path, hub_cache, monkeypatch):
    import huggingface_hub.constants as c
    from test_magicfixup import FIX

    from backend.models.editors import magic_fixup as mf

    monkeypatch.setattr(c, "HF_HOME", str(tmp_path / "hf"))
    cfg = json.loads((FIX / "config.json").read_text())
    from safetensors.torch import load_file

    weights = load_file(FIX / "weights.safetensors")
    blob = tmp_path / "blob"
    torch.save(dict(weights), blob)
    put_in_hub_cache(hub_cache, "HadiZayer/MagicFixup", {"magicfu_weights": blob.read_bytes()})
    logs = []
    m = mf.load_magic_fixup("magicfixup", device="cpu", dtype="float32", unet=cfg["unet"], vae=cfg["vae"]["ddconfig"], log=logs.append)
    assert m.schedule_kind and any("non-commercial" in line for line in logs)
    assert any("converting magicfu_weights" in line for line in logs)


def test_an_offline_job_names_every_missing_model_before_loading_any(tmp_path, hub_cache):
    from backend.model_needs import job_model_keys

    spec = {"task": "stylize", "views": [], "edit": {"prompt": "ink", "controls": [{"kind": "canny"}, {"kind": "tile"}]},
            "models": {"multiview": "seva-1.1", "editor": "sd15", "paths": {"seva-clip": str(tmp_path)}}}  # fmt: skip
    keys = job_model_keys("stylize", spec["models"], spec["edit"])
    assert keys == ["seva-1.1", "seva-vae", "sd15", "controlnet-canny", "controlnet-tile"]
    assert job_model_keys("relight_text", {"multiview": "seva-tiny", "editor": "ic-light-tiny"}) == []
    assert job_model_keys("relight_text", {"source": "/my/sd"}) == ["seva-1.1", "seva-vae", "seva-clip", "ic-light-fc"]
    from test_multiview_edit import K, rig

    views, files = [], {}
    for i, v in enumerate(rig(3)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        views.append({"name": f"cam {i}", "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"})
    job = JobFolder.create(tmp_path / "job", parse_spec({"task": "relight_text", "views": views, "edit": {"prompt": "x"}}), files)
    res = run_job(job)
    assert res.status == "failed" and "5 model(s) not on this machine" in res.error
    for key in ("seva-1.1", "seva-vae", "seva-clip", "ic-light-fc", "ic-light-base"):
        assert key in res.error
