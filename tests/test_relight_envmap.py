"""relight_envmap: object crops, Neural Gaffer x SEVA across resolutions, the job end to end (tiny models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_fixtures import fixture_dir

from backend import envmap
from backend.jobs import JobFolder, JobSpecError, parse_spec
from backend.models.editors.neural_gaffer import tiny_neural_gaffer
from backend.models.seva.cameras import orbit
from backend.models.seva.encoders import tiny_seva
from backend.pipelines.multiview_edit import EditSettings, EditView, edit_views
from backend.pipelines.object_views import Crop, crop_K, crop_rgba, object_crop, on_white, paste_back
from backend.runner import run_job

FIX = fixture_dir("neuralgaffer")
K = np.array([[60.0, 0, 40], [0, 60.0, 32], [0, 0, 1]])


def test_object_crop_centres_the_object_at_75_percent():
    alpha = np.zeros((64, 80))
    alpha[10:40, 20:35] = 255  # 15 wide, 30 high
    c = object_crop(alpha)
    assert c == Crop(left=20 - (40 // 2 - 15 // 2), top=10 - (40 // 2 - 30 // 2), side=40)
    rgba = np.dstack([np.full((64, 80, 3), 90.0), alpha])
    sq = crop_rgba(rgba, c)
    assert sq.shape == (40, 40, 4) and sq[..., 3].sum() == alpha.sum()  # the whole object, nothing else
    np.testing.assert_allclose(crop_K(K, c)[:2, 2], [40 - c.left, 32 - c.top])
    white = on_white(sq, 256)
    assert white.shape == (256, 256, 3) and (white[0, 0] == 255).all() and (white[128, 128] == 90).all()
    back = paste_back(np.full((256, 256, 3), 200, np.uint8), c, alpha.astype(np.uint8))
    assert (back[alpha > 0, :3] == 200).all() and (back[..., 3] == alpha).all()
    plate = np.full((64, 80, 3), 7, np.uint8)
    comp = paste_back(np.full((256, 256, 3), 200, np.uint8), c, alpha.astype(np.uint8), plate)
    assert (comp[alpha == 0, :3] == 7).all() and (comp[alpha > 0, :3] == 200).all() and (comp[..., 3] == 255).all()
    with pytest.raises(ValueError, match="shows no object"):
        object_crop(np.zeros((8, 8)))


def test_a_crop_past_the_frame_edge_is_transparent_there():
    alpha = np.zeros((32, 32))
    alpha[0:20, 0:10] = 255
    c = object_crop(alpha)
    assert c.left < 0 and c.top < 0
    sq = crop_rgba(np.dstack([np.ones((32, 32, 3)), alpha]), c)
    assert sq[..., 3].sum() == alpha.sum() and sq[0, 0, 3] == 0


@pytest.fixture(scope="module")
def models():
    return tiny_seva(), tiny_neural_gaffer()


def lighting() -> envmap.Lighting:
    from safetensors.numpy import load_file

    hdr = load_file(FIX / "envmap_input.safetensors")["envmap/hdr_32x64"]
    return envmap.Lighting(envmap.prepare(hdr))


def rig(n: int, light: envmap.Lighting, seed: int = 0) -> list[EditView]:
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), n).numpy()
    rng = np.random.default_rng(seed)
    views = []
    for i in range(n):
        rgba = np.zeros((48, 48, 4))
        rgba[..., :3] = rng.integers(0, 256, (48, 48, 3))
        rgba[8:40, 12:36, 3] = 255
        hdrn, ldr = envmap.condition_maps(light, envmap.opencv_to_blender(c2w[i]))
        views.append(EditView(rgba, np.array([[50.0, 0, 24], [0, 50.0, 24], [0, 0, 1]]), c2w[i], conditions={"hdrn": hdrn, "ldr": ldr}))
    return views


def settings(**kw) -> EditSettings:
    return EditSettings(**({"prompt": "", "steps": 3, "T": 4, "size": 64, "cfg_editor": 3.0, "step": "euler"} | kw))


def test_gaffer_couples_across_resolutions_and_lambda_zero_is_uncoupled(models):
    seva, ng = models
    light = lighting()
    res = edit_views(seva, ng, rig(5, light), 0, settings(lam=0.5))
    assert all(i.shape == (3, 64, 64) and torch.isfinite(i).all() for i in res.images)  # the 256² reference edit at SEVA's size
    a, b = rig(4, light), rig(4, light)
    spun = envmap.Lighting(light.envmap, spin_index=60)
    for v in b[1:]:  # other lighting for the targets only
        v.conditions["hdrn"], v.conditions["ldr"] = envmap.condition_maps(spun, envmap.opencv_to_blender(v.c2w))
    free = [edit_views(seva, ng, r, 0, settings(lam=0.0)).images for r in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*free, strict=True))
    tied = [edit_views(seva, ng, r, 0, settings(lam=0.5)).images for r in (a, b)]
    assert torch.equal(tied[0][0], tied[1][0]) and not torch.equal(tied[0][1], tied[1][1])


def _envmap_file(tmp_path: Path) -> Path:
    return Path(shutil.copy(FIX / "envmap_32x64.exr", tmp_path / "studio.exr"))


@pytest.mark.parametrize("composite", ["envmap", "transparent"])
def test_relight_envmap_job_end_to_end(tmp_path, composite):
    light = lighting()
    views, files = [], {"studio.exr": _envmap_file(tmp_path)}
    for i, v in enumerate(rig(4, light)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        depth = np.where(v.rgba[..., 3] > 0, 4.0, np.inf).astype(np.float32)
        np.save(tmp_path / f"d{i}.npy", depth)
        files |= {f"v{i}.png": tmp_path / f"v{i}.png", f"d{i}.npy": tmp_path / f"d{i}.npy"}
        views.append({"name": f"cam {i}", "width": 48, "height": 48, "K": v.K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png",
                      "depth": f"d{i}.npy"})  # fmt: skip
    spec = {
        "task": "relight_envmap", "views": views, "reference_view": 1,
        "edit": {"envmap": "studio.exr", "envmap_rotation": [0, 0, 0.5], "envmap_strength": 2.0, "composite": composite},
        "models": {"multiview": "seva-tiny", "editor": "neural-gaffer-tiny"}, "sampling": {"steps": 3},
        "multiview": {"window": 4, "size": 64},
    }  # fmt: skip
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    out = [np.asarray(Image.open(job.root / o.path)) for o in res.outputs if o.view]
    assert len(out) == 4 and all(o.shape == (48, 48, 4) for o in out)
    alpha = rig(1, light)[0].rgba[..., 3]
    if composite == "transparent":
        assert all((o[..., 3] == alpha).all() for o in out)
    else:  # the environment each camera sees, behind the object
        assert all((o[..., 3] == 255).all() for o in out)
        R = envmap.opencv_to_blender(np.array(views[0]["c2w"]))
        plate = envmap.background_plate(envmap.Lighting(light.envmap * 2, (0, 0, 0.5)), R, 48, 48, np.array(views[0]["K"]))
        np.testing.assert_array_equal(out[0][alpha == 0, :3], plate[alpha == 0])
    meta = json.loads((job.root / "outputs/metadata.json").read_text())
    assert meta["editor"]["editor"] == "neural-gaffer" and "consistency" in meta


def test_relight_envmap_spec_errors():
    view = {"name": "a", "width": 64, "height": 64, "K": K.tolist(), "c2w": np.eye(4).tolist(), "image": "a.png"}
    with pytest.raises(JobSpecError, match="needs an environment map"):
        parse_spec({"task": "relight_envmap", "views": [view]})
    with pytest.raises(JobSpecError, match="spin must be below"):
        parse_spec({"task": "relight_envmap", "views": [view], "edit": {"envmap": "a.exr", "spin": 5, "spin_total": 5}})
    with pytest.raises(JobSpecError, match="not a Neural Gaffer model"):
        parse_spec({"task": "relight_envmap", "views": [view], "edit": {"envmap": "a.exr"}, "models": {"editor": "sd-tiny"}})
