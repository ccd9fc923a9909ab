"""Multi-view relighting (IC-Light x SEVA) on tiny models: coupling wiring, windows, the job."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs import JobFolder, JobSpecError, parse_spec
from backend.models.editors.ic_light import load_ic_light
from backend.models.seva.cameras import orbit
from backend.models.seva.encoders import tiny_seva
from backend.pipelines.multiview_edit import EditSettings, EditView, relight_views
from backend.runner import run_job

K = np.array([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]])


@pytest.fixture(scope="module")
def models():
    return tiny_seva(), load_ic_light("fc", base="tiny")


def rig(n: int, seed: int = 0) -> list[EditView]:
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), n).numpy()
    rng = np.random.default_rng(seed)
    alpha = np.zeros((64, 64))
    alpha[12:52, 16:48] = 255
    return [EditView(np.dstack([rng.integers(0, 256, (64, 64, 3)), alpha]).astype(np.float64), K, c2w[i]) for i in range(n)]


def settings(**kw) -> EditSettings:
    return EditSettings(**({"prompt": "sunset over the sea", "steps": 3, "T": 4, "size": 64} | kw))


def test_windows_cover_every_view_once_and_the_reference_is_the_2d_edit(models):
    seva, ic = models
    res = relight_views(seva, ic, rig(8), 2, settings())
    assert len(res.images) == 8 and res.reference == 2 and res.metadata["windows"] == 3  # 7 targets, 3 per window
    assert all(torch.isfinite(i).all() and i.shape == (3, 64, 64) for i in res.images)


def test_lambda_zero_targets_ignore_their_own_images_and_coupling_uses_them(models):
    seva, ic = models
    a, b = rig(5, seed=0), rig(5, seed=0)
    for v in b[1:]:  # change every target view's image, keep the reference
        v.rgba[..., :3] = 255 - v.rgba[..., :3]
    free_a = relight_views(seva, ic, a, 0, settings(lam=0.0))
    free_b = relight_views(seva, ic, b, 0, settings(lam=0.0))
    assert all(torch.equal(x, y) for x, y in zip(free_a.images, free_b.images, strict=True))  # bitwise: uncoupled
    tied_a = relight_views(seva, ic, a, 0, settings(lam=0.5))
    tied_b = relight_views(seva, ic, b, 0, settings(lam=0.5))
    assert torch.equal(tied_a.images[0], tied_b.images[0])  # the reference edit sees only the reference
    assert not torch.equal(tied_a.images[1], tied_b.images[1])  # coupled frames follow their own view


def test_frame_k_is_pulled_towards_editor_view_k(models):
    """The last predictions: SEVA's target slots end nearer their own editor trajectory than a neighbour's."""
    seva, ic = models
    last = {}

    def grab(label, info):
        last[label] = {k: v.detach().clone() for k, v in info.x0.items()}

    relight_views(seva, ic, rig(4), 0, settings(lam=5.0, steps=4), callback=grab)
    x0 = last["window 1/1"]
    frames, edits = x0["seva"][1:4], x0["editor"]  # window [ref, t0, t1, t2]
    own = [(frames[k] - edits[k]).norm() for k in range(3)]
    other = [(frames[k] - edits[(k + 1) % 3]).norm() for k in range(3)]
    assert all(o < m for o, m in zip(own, other, strict=True)), (own, other)


def test_relight_job_end_to_end(tmp_path):
    views, files = [], {}
    for i, v in enumerate(rig(5)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        views.append({"name": f"cam {i}", "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"})
    spec = {
        "task": "relight_text",
        "views": views,
        "reference_view": 1,
        "edit": {"prompt": "beach sunset lighting"},
        "models": {"multiview": "seva-tiny", "editor": "ic-light-tiny"},
        "sampling": {"steps": 3, "lam": 0.05},
        "multiview": {"window": 4, "size": 64},
    }
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    roles = {o.view: o.role for o in res.outputs if o.view}
    assert roles == {"cam 0": "result", "cam 1": "reference_edit", "cam 2": "result", "cam 3": "result", "cam 4": "result"}
    assert Image.open(job.root / "outputs/contact_sheet.png").width > 5 * 64
    meta = json.loads((job.root / "outputs/metadata.json").read_text())
    assert meta["models"] == {"multiview": "seva-tiny", "editor": "ic-light-tiny"} and meta["labels"]
    # photos without alpha are refused with a reason
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "rgb.png")
    files2 = dict(files, **{"v0.png": tmp_path / "rgb.png"})
    job2 = JobFolder.create(tmp_path / "job2", parse_spec(spec), files2)
    assert "no alpha channel" in run_job(job2).error


def test_relight_specs_need_a_prompt_and_images():
    view = {"name": "a", "width": 64, "height": 64, "K": K.tolist(), "c2w": np.eye(4).tolist(), "image": "a.png"}
    with pytest.raises(JobSpecError, match="needs a lighting prompt"):
        parse_spec({"task": "relight_text", "views": [view]})
    with pytest.raises(JobSpecError, match="missing for \\['b'\\]"):
        parse_spec({"task": "relight_text", "views": [view, dict(view, name="b", image=None)], "edit": {"prompt": "x"}})
