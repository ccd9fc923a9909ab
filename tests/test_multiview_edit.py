"""Multi-view relighting (IC-Light x SEVA) on tiny models: coupling wiring, windows, the job."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs import JobFolder, JobSpecError, parse_spec
from backend.models.editors.control_images import depth_control
from backend.models.editors.controlnet import load_controlnet_editor
from backend.models.editors.ic_light import load_ic_light
from backend.models.seva.cameras import orbit
from backend.models.seva.encoders import tiny_seva
from backend.pipelines.multiview_edit import EditSettings, EditView, edit_views
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
    res = edit_views(seva, ic, rig(8), 2, settings())
    assert len(res.images) == 8 and res.reference == 2 and res.metadata["windows"] == 3  # 7 targets, 3 per window
    assert all(torch.isfinite(i).all() and i.shape == (3, 64, 64) for i in res.images)


def test_lambda_zero_targets_ignore_their_own_images_and_coupling_uses_them(models):
    seva, ic = models
    a, b = rig(5, seed=0), rig(5, seed=0)
    for v in b[1:]:  # change every target view's image, keep the reference
        v.rgba[..., :3] = 255 - v.rgba[..., :3]
    free_a = edit_views(seva, ic, a, 0, settings(lam=0.0))
    free_b = edit_views(seva, ic, b, 0, settings(lam=0.0))
    assert all(torch.equal(x, y) for x, y in zip(free_a.images, free_b.images, strict=True))  # bitwise: uncoupled
    tied_a = edit_views(seva, ic, a, 0, settings(lam=0.5))
    tied_b = edit_views(seva, ic, b, 0, settings(lam=0.5))
    assert torch.equal(tied_a.images[0], tied_b.images[0])  # the reference edit sees only the reference
    assert not torch.equal(tied_a.images[1], tied_b.images[1])  # coupled frames follow their own view


def test_frame_k_is_pulled_towards_editor_view_k(models):
    """The last predictions: SEVA's target slots end nearer their own editor trajectory than a neighbour's."""
    seva, ic = models
    last = {}

    def grab(label, info):
        last[label] = {k: v.detach().clone() for k, v in info.x0.items()}

    edit_views(seva, ic, rig(4), 0, settings(lam=5.0, steps=4), callback=grab)
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
    assert "has no alpha" in run_job(job2).error and "'alpha' mask file" in run_job(job2).error
    # ... unless the view names its mask in View.alpha: the same pixels as the RGBA render, the same result
    rgba0 = np.asarray(Image.open(files["v0.png"]))
    Image.fromarray(rgba0[..., :3]).save(tmp_path / "rgb0.png")
    Image.fromarray(rgba0[..., 3]).save(tmp_path / "mask0.png")
    spec3 = json.loads(json.dumps(spec))
    spec3["views"][0] |= {"image": "rgb0.png", "alpha": "mask0.png"}
    files3 = {k: v for k, v in files.items() if k != "v0.png"} | {"rgb0.png": tmp_path / "rgb0.png", "mask0.png": tmp_path / "mask0.png"}
    job3 = JobFolder.create(tmp_path / "job3", parse_spec(spec3), files3)
    assert run_job(job3).status == "done"
    for o in json.loads((job.root / "result.json").read_text())["outputs"]:
        if o.get("view"):
            assert np.array_equal(np.asarray(Image.open(job.root / o["path"])), np.asarray(Image.open(job3.root / o["path"]))), o


def test_relight_specs_need_a_prompt_and_images():
    view = {"name": "a", "width": 64, "height": 64, "K": K.tolist(), "c2w": np.eye(4).tolist(), "image": "a.png"}
    with pytest.raises(JobSpecError, match="needs a prompt, e.g. 'sunset"):
        parse_spec({"task": "relight_text", "views": [view]})
    with pytest.raises(JobSpecError, match="missing for \\['b'\\]"):
        parse_spec({"task": "relight_text", "views": [view, dict(view, name="b", image=None)], "edit": {"prompt": "x"}})


# --- ControlNet stylisation and IC-Light fbc through the same pipeline ---------------------------


def depth_of(n: int) -> np.ndarray:
    d = np.full((64, 64), np.inf)
    d[12:52, 16:48] = 4.0 - 0.01 * n
    return d


def styled_rig(n: int, seed: int = 0) -> list[EditView]:
    views = rig(n, seed)
    for i, v in enumerate(views):
        v.extras = {"depth": depth_control(depth_of(i))}
    return views


def test_stylize_windows_and_lambda_zero_is_uncoupled(models):
    seva, _ = models
    cn = load_controlnet_editor(["depth"], base="tiny", strength=0.7)
    res = edit_views(seva, cn, styled_rig(6), 0, settings(prompt="a watercolor painting", steps=4))
    assert len(res.images) == 6 and res.metadata["windows"] == 2 and res.metadata["editor"]["controls"] == ["depth"]
    a, b = styled_rig(4), styled_rig(4)
    for v in b[1:]:
        v.extras["depth"] = 1.0 - v.extras["depth"]
    free = [edit_views(seva, cn, r, 0, settings(lam=0.0, steps=4)).images for r in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*free, strict=True))  # targets' controls unused at lam 0
    tied = [edit_views(seva, cn, r, 0, settings(lam=0.5, steps=4)).images for r in (a, b)]
    assert torch.equal(tied[0][0], tied[1][0]) and not torch.equal(tied[0][2], tied[1][2])


def test_ic_light_fbc_reads_a_background_per_view(models):
    seva, _ = models
    fbc = load_ic_light("fbc", base="tiny")
    views = rig(3)
    with pytest.raises(ValueError, match="needs a background image for every view"):
        edit_views(seva, fbc, views, 0, settings())
    for v in views:
        v.extras = {"background": np.full((64, 64, 3), 40.0)}
    dark = edit_views(seva, fbc, views, 0, settings()).images[0]
    for v in views:
        v.extras = {"background": np.full((64, 64, 3), 230.0)}
    assert not torch.equal(dark, edit_views(seva, fbc, views, 0, settings()).images[0])


def _write_views(tmp_path, views, depth=True):
    specs, files = [], {}
    for i, v in enumerate(views):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        spec = {"name": f"cam {i}", "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"}
        if depth:
            np.save(tmp_path / f"d{i}.npy", depth_of(i).astype(np.float32))
            files[f"d{i}.npy"] = tmp_path / f"d{i}.npy"
            spec["depth"] = f"d{i}.npy"
        specs.append(spec)
    return specs, files


def test_stylize_job_end_to_end_with_two_controlnets(tmp_path):
    views, files = _write_views(tmp_path, rig(4))
    spec = {
        "task": "stylize",
        "views": views,
        "edit": {"prompt": "a watercolor painting", "controls": [{"kind": "depth"}, {"kind": "canny", "scale": 0.5}], "strength": 0.8},
        "models": {"multiview": "seva-tiny", "editor": "sd-tiny"},
        "sampling": {"steps": 3, "lam": 0.05},
        "multiview": {"window": 4, "size": 64},
    }
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    assert sorted(o.view for o in res.outputs if o.view) == [f"cam {i}" for i in range(4)]
    meta = json.loads((job.root / "outputs/metadata.json").read_text())
    assert meta["editor"] == {"editor": "controlnet", "controls": ["depth", "canny"], "scales": [1.0, 0.5], "start": 0.0, "end": 1.0,
                              "strength": 0.8}  # fmt: skip
    assert 0 <= meta["consistency"]["mean"] < 1 and (job.root / "outputs/consistency_heatmaps.png").exists()


def test_stylize_spec_names_the_missing_pass(tmp_path):
    views, _ = _write_views(tmp_path, rig(2), depth=False)
    with pytest.raises(JobSpecError, match="depth ControlNet needs the depth pass of every view; missing for \\['cam 0', 'cam 1'\\]"):
        parse_spec({"task": "stylize", "views": views, "edit": {"prompt": "x"}})
    parse_spec({"task": "stylize", "views": views, "edit": {"prompt": "x", "controls": [{"kind": "canny"}]}})  # colour only
    with pytest.raises(JobSpecError, match="not a model of kind 'sd'"):
        parse_spec({"task": "stylize", "views": views, "edit": {"prompt": "x", "controls": [{"kind": "canny"}]},
                    "models": {"editor": "ic-light-tiny"}})  # fmt: skip
    with pytest.raises(JobSpecError, match="fbc .* needs a background image"):
        parse_spec({"task": "relight_text", "views": views, "edit": {"prompt": "x"}, "models": {"editor": "ic-light-fbc"}})
    with pytest.raises(JobSpecError, match="only used by IC-Light fbc"):
        parse_spec({"task": "relight_text", "views": views, "edit": {"prompt": "x", "background": "bg.png"}})


def test_relight_fbc_job_uses_the_background_file(tmp_path):
    views, files = _write_views(tmp_path, rig(3), depth=False)
    out = []
    for level in (30, 220):
        Image.fromarray(np.full((40, 50, 3), level, np.uint8)).save(tmp_path / "bg.png")
        spec = {
            "task": "relight_text", "views": views, "edit": {"prompt": "window light", "background": "bg.png"},
            "models": {"multiview": "seva-tiny", "editor": "ic-light-fbc-tiny"}, "sampling": {"steps": 2},
            "multiview": {"window": 4, "size": 64},
        }  # fmt: skip
        job = JobFolder.create(tmp_path / f"job{level}", parse_spec(spec), dict(files, **{"bg.png": tmp_path / "bg.png"}))
        res = run_job(job)
        assert res.status == "done", res.error
        out.append(np.asarray(Image.open(job.root / "outputs/000_cam_0.png")))
    assert not np.array_equal(*out)


def test_views_whose_names_slug_alike_never_share_an_output_file(tmp_path):
    """'Cam 1', 'CAM 1', 'Cam_1', '前', '後' once all wrote outputs/cam-1.png (or prompt.png): the job said done
    and one image stood for several cameras. Names now start with the view's index."""
    names = ["Cam 1", "CAM 1", "Cam_1", "前", "後"]
    views, files = [], {}
    for i, (v, name) in enumerate(zip(rig(5), names, strict=True)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        views.append({"name": name, "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"})
    spec = {"task": "relight_text", "views": views, "edit": {"prompt": "window light"}, "models": {"multiview": "seva-tiny", "editor":
            "ic-light-tiny"}, "sampling": {"steps": 2}, "multiview": {"window": 5, "size": 64}}  # fmt: skip
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    per_view = {o.view: o.path for o in res.outputs if o.view}
    assert sorted(per_view) == sorted(names) and len(set(per_view.values())) == 5
    assert per_view["Cam 1"] == "outputs/000_Cam_1.png" and per_view["前"] == "outputs/003.png"
    assert all((job.root / p).is_file() for p in per_view.values())


def test_progress_is_one_step_count_over_the_reference_edit_and_every_window(tmp_path):
    """It once read 95 % after the reference edit and restarted (with its ETA) in every SEVA window."""
    views, files = [], {}
    for i, v in enumerate(rig(6)):
        Image.fromarray(v.rgba.astype(np.uint8), "RGBA").save(tmp_path / f"v{i}.png")
        files[f"v{i}.png"] = tmp_path / f"v{i}.png"
        views.append({"name": f"cam {i}", "width": 64, "height": 64, "K": K.tolist(), "c2w": v.c2w.tolist(), "image": f"v{i}.png"})
    spec = {"task": "relight_text", "views": views, "edit": {"prompt": "window light"}, "models": {"multiview": "seva-tiny", "editor":
            "ic-light-tiny"}, "sampling": {"steps": 3}, "multiview": {"window": 3, "size": 64}}  # fmt: skip
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    events = []
    assert run_job(job, progress=events.append).status == "done"
    sampling = [e for e in events if e.stage == "sampling"]
    windows = {e.message for e in sampling if e.message.startswith("window")}
    assert len(windows) >= 3  # 5 targets in windows of 3 frames (1 input + 2 targets)
    assert [e.step for e in sampling] == list(range(1, len(sampling) + 1))
    assert {e.total for e in sampling} == {len(sampling)} == {3 + 3 * len(windows)}
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in sampling) and sampling[-1].eta_s == 0
