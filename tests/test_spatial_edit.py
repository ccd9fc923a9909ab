"""spatial_edit end to end with tiny models: coarse edits from exact depth, Magic Fixup x SEVA, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs import JobFolder, JobSpecError, parse_spec
from backend.models.editors.magic_fixup import tiny_magic_fixup
from backend.models.seva.cameras import orbit
from backend.models.seva.encoders import tiny_seva
from backend.pipelines.multiview_edit import EditSettings, EditView, edit_views
from backend.runner import run_job

S = 48
K = np.array([[60.0, 0, S / 2], [0, 60.0, S / 2], [0, 0, 1]])


def views(n: int):
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), n).numpy()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgba = np.dstack([rng.integers(0, 256, (S, S, 3)), np.full((S, S), 255)]).astype(np.float64)
        depth = np.full((S, S), 6.0, np.float32)
        depth[14:34, 14:34] = 4.0  # a square object in front of a wall
        index = np.where(depth < 5, 1, 2).astype(np.int32)
        out.append((rgba, depth, index, c2w[i]))
    return out


def test_fixup_couples_with_seva_and_lambda_zero_is_uncoupled():
    seva, fixup = tiny_seva(), tiny_magic_fixup()
    from backend.coarse_edit import ObjectEdit, coarse_edit

    def rig(shift):
        vs = []
        for rgba, depth, index, c2w in views(4):
            delta = np.eye(4)
            delta[:3, 3] = c2w[:3, :3] @ np.array([shift, 0, 0])
            ce = coarse_edit(rgba[..., :3], depth, index, K, c2w, [ObjectEdit(1, delta)])
            vs.append(EditView(rgba, K, c2w, extras={"edit": ce.rgba}))
        return vs

    s = EditSettings(prompt="", steps=3, T=4, size=64, lam=0.0)
    a, b = rig(0.3), rig(0.3)
    for v in b[1:]:
        v.extras["edit"] = v.extras["edit"].copy()
        v.extras["edit"][..., :3] = 255 - v.extras["edit"][..., :3]
    free = [edit_views(seva, fixup, r, 0, s).images for r in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*free, strict=True))
    s.lam = 0.5
    tied = [edit_views(seva, fixup, r, 0, s).images for r in (a, b)]
    assert torch.equal(tied[0][0], tied[1][0]) and not torch.equal(tied[0][1], tied[1][1])


def test_spatial_edit_job_end_to_end(tmp_path):
    specs, files = [], {}
    for i, (rgba, depth, index, c2w) in enumerate(views(4)):
        Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        np.save(tmp_path / f"d{i}.npy", depth)
        np.save(tmp_path / f"o{i}.npy", index)
        files |= {f"v{i}.png": tmp_path / f"v{i}.png", f"d{i}.npy": tmp_path / f"d{i}.npy", f"o{i}.npy": tmp_path / f"o{i}.npy"}
        specs.append({"name": f"cam {i}", "width": S, "height": S, "K": K.tolist(), "c2w": c2w.tolist(), "image": f"v{i}.png",
                      "depth": f"d{i}.npy", "object_index": f"o{i}.npy"})  # fmt: skip
    delta = np.eye(4)
    delta[:3, 3] = (0.4, 0.0, 0.0)
    spec = {
        "task": "spatial_edit", "views": specs,
        "edit": {"objects": [{"index": 1, "name": "Cube", "delta": delta.tolist()}]},
        "models": {"multiview": "seva-tiny", "editor": "magicfixup-tiny"}, "sampling": {"steps": 3},
        "multiview": {"window": 4},
    }  # fmt: skip
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    roles = sorted(o.role for o in res.outputs if o.view == "cam 2")
    assert roles == ["coarse_edit", "result"]
    coarse = np.asarray(Image.open(job.root / "outputs/coarse_002_cam_2.png"))
    assert (coarse[..., 3] == 0).any() and (coarse[..., 3] == 255).any()  # holes where the object left
    meta = json.loads((job.root / "outputs/metadata.json").read_text())
    assert meta["editor"]["editor"] == "magic-fixup" and meta["working_size_hw"] == [512, 512]
    assert "consistency" in meta


def test_spatial_edit_spec_errors():
    view = {"name": "a", "width": 64, "height": 64, "K": K.tolist(), "c2w": np.eye(4).tolist(), "image": "a.png", "depth": "d.npy"}
    with pytest.raises(JobSpecError, match="needs at least one object move"):
        parse_spec({"task": "spatial_edit", "views": [view]})
    with pytest.raises(JobSpecError, match="object_index missing for \\['a'\\]"):
        parse_spec({"task": "spatial_edit", "views": [view], "edit": {"objects": [{"index": 1}]}})
    flat = np.diag([1.0, 1.0, 0.0, 1.0]).tolist()  # scaled to zero along z
    with pytest.raises(JobSpecError, match="invertible"):
        parse_spec({"task": "spatial_edit", "views": [view], "edit": {"objects": [{"index": 1, "delta": flat}]}})
    with pytest.raises(JobSpecError, match="last row"):
        parse_spec({"task": "spatial_edit", "views": [view], "edit": {"objects": [{"index": 1, "delta": np.zeros((4, 4)).tolist()}]}})
