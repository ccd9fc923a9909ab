"""SEVA novel-view pipeline on the tiny model: windows, two passes, the participant wrapper, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs import JobSpecError, parse_spec
from backend.models.seva.cameras import orbit
from backend.models.seva.encoders import tiny_seva
from backend.models.seva.sampling import (
    SevaDenoiser,
    SevaWindowDenoiser,
    build_conditioning,
    guidance_scales,
    sample_euler_edm,
    seva_schedule,
)
from backend.pipelines.novel_views import NovelViewSettings, PosedView, novel_views
from backend.sampling import Participant, sample_coupled

ROOT = Path(__file__).resolve().parent.parent
K = torch.tensor([[70.0, 0, 48], [0, 70.0, 32], [0, 0, 1]])


@pytest.fixture(scope="module")
def model():
    return tiny_seva()


def ring(n: int) -> torch.Tensor:
    start = torch.eye(4)
    start[2, 3] = -4.0
    return orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), n)


def image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((3, 64, 96), generator=g) * 2 - 1


def test_one_pass_windows_cover_every_target_and_are_seeded(model):
    c2w = ring(12)
    inputs = [PosedView(c2w[0], K, 96, 64, image(0)), PosedView(c2w[6], K, 96, 64, image(1))]
    targets = [PosedView(c2w[i], K, 96, 64) for i in range(12) if i not in (0, 6)]
    s = NovelViewSettings(steps=3, T=5, size=64)
    out = novel_views(model, inputs, targets, s)
    assert len(out.images) == 10 and out.size_hw == (64, 128)  # short side 64, long side 96 rounded to a multiple of 64
    assert out.metadata["plan"] == {"strategy": "nearest-gt", "windows": 4}  # 10 targets, 3 per window of 5 with 2 inputs
    assert out.metadata["network_calls"] == 4 * 3
    again = novel_views(model, inputs, targets, s)
    assert all(torch.equal(a, b) for a, b in zip(out.images, again.images, strict=True))
    other = novel_views(model, inputs, targets, NovelViewSettings(steps=3, T=5, size=64, seed=24))
    assert not torch.equal(out.images[0], other.images[0])


def test_two_pass_plan_runs_anchors_then_interpolation(model):
    c2w = ring(16)
    inputs = [PosedView(c2w[0], K, 96, 64, image(2))]
    targets = [PosedView(c2w[i], K, 96, 64) for i in range(1, 16)]
    seen = []
    out = novel_views(model, inputs, targets, NovelViewSettings(steps=2, T=6, size=64, passes=2), callback=lambda *a: seen.append(a))
    plan = out.metadata["plan"]
    assert plan["anchors"] == 5 and plan["windows"][0] == 1 and plan["windows"][1] >= 3
    assert len(out.images) == 15 and all(torch.isfinite(i).all() for i in out.images)
    assert seen[-1][1] == seen[-1][2] == out.metadata["network_calls"]  # progress ends at the announced total


def test_bad_inputs_are_explained(model):
    c2w = ring(4)
    with pytest.raises(ValueError, match="every input view needs an image"):
        novel_views(model, [PosedView(c2w[0], K, 96, 64)], [PosedView(c2w[1], K, 96, 64)])
    with pytest.raises(ValueError, match="window of T=2 must hold all 2 inputs"):
        novel_views(
            model, [PosedView(c2w[i], K, 96, 64, image(i)) for i in range(2)], [PosedView(c2w[3], K, 96, 64)], NovelViewSettings(T=2)
        )
    with pytest.raises(ValueError, match="multiple of 64 on both sides"):
        novel_views(model, [PosedView(c2w[0], K, 96, 64, image(0))], [PosedView(c2w[3], K, 96, 64)], NovelViewSettings(size=(96, 64)))


def test_window_participant_drives_seva_through_the_coupled_sampler(model):
    """SEVA as a plain participant: Euler steps of the coupled sampler = the reference sampler without noise."""
    c2w = ring(4)
    from backend.models.seva.cameras import window_cameras

    Kn = torch.stack([K / torch.tensor([[96.0], [64.0], [1.0]])] * 4)
    wc = window_cameras(c2w, Kn, c2w, (64, 128))
    mask = torch.tensor([True, False, False, False])
    lat = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    uncond, cond = build_conditioning(wc.plucker, mask, lat, torch.randn(64, generator=torch.Generator().manual_seed(1)))
    scales = guidance_scales(1, 2.0, 1.2, wc.c2w, wc.K, mask)
    sig = seva_schedule(5)
    den = SevaDenoiser(model.net)
    p = Participant("seva", SevaWindowDenoiser(den, uncond, cond, scales, torch.device("cpu")), (4, 4, 8, 16), sigmas=sig.double(), seeds=9)
    coupled = sample_coupled([p], step="euler").latents["seva"]
    x0 = torch.randn((4, 4, 8, 16), generator=torch.Generator().manual_seed(9)) * torch.sqrt(1 + sig[0] ** 2)
    ref = sample_euler_edm(den, x0, sig, uncond, cond, scales, lambda i, x: torch.zeros_like(x))
    # only the reference's sigma + 1e-6 separates the two
    torch.testing.assert_close(coupled, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_novel_view_jobs_need_inputs_and_targets():
    view = {"name": "a", "width": 64, "height": 64, "K": [[50, 0, 32], [0, 50, 32], [0, 0, 1]], "c2w": np.eye(4).tolist()}
    with pytest.raises(JobSpecError, match="needs input views with an image and target views without one"):
        parse_spec({"task": "novel_views", "views": [view]})
    with pytest.raises(JobSpecError, match="is not a SEVA model"):
        parse_spec(
            {"task": "novel_views", "views": [view | {"image": "a.png"}, view | {"name": "b"}], "models": {"multiview": "flux-tiny"}}
        )


def test_cli_novel_views_end_to_end(tmp_path):
    c2w = ring(8)
    Kl = K.tolist()
    cams = [{"name": "front", "c2w": c2w[0].tolist(), "K": Kl, "width": 96, "height": 64}]
    targets = [{"name": f"orbit {i}", "c2w": c2w[i].tolist(), "K": Kl, "width": 96, "height": 64} for i in range(1, 8)]
    (tmp_path / "cameras.json").write_text(json.dumps({"views": cams}))
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)).save(tmp_path / "front.png")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = ["novel-views", "--model", "tiny", "--images", str(tmp_path / "front.png"), "--cameras", str(tmp_path / "cameras.json")]
    args += ["--targets", str(tmp_path / "targets.json"), "--steps", "3", "--window", "5", "--size", "64", "--out", str(out)]
    r = subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tiny random weights" in r.stdout and "7 targets from 1 inputs" in r.stdout
    for i in range(1, 8):
        assert Image.open(out / f"outputs/{i:03d}_orbit_{i}.png").size == (96, 64)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and {o["view"] for o in result["outputs"] if o["view"]} == {f"orbit {i}" for i in range(1, 8)}
    assert json.loads((out / "job.json").read_text())["views"][0]["image"] == "000_front.png"


def test_vae_wrapper_is_scaled_posterior_mean_and_chunking_changes_nothing(model):
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    from backend.models.seva.encoders import VAE_SCALE, SevaVAE

    vae = model.vae.vae
    with torch.no_grad():
        ref = vae.encode(imgs).latent_dist.mean * VAE_SCALE
        dec_ref = vae.decode(ref / VAE_SCALE).sample
    for chunk in (1, 2, 3):
        torch.testing.assert_close(SevaVAE(vae, chunk).encode(imgs), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(SevaVAE(vae, chunk).decode(ref), dec_ref, rtol=1e-4, atol=1e-5)
    assert VAE_SCALE == 0.18215


def test_novel_view_job_with_depths_writes_a_consistency_report(tmp_path):
    """Views with exact depth (a ground plane seen from above): the job scores its own outputs."""
    from test_consistency import CAMS, H, W, render  # synthetic plane views

    from backend.jobs import JobFolder
    from backend.runner import run_job

    views, files = [], {}
    for i, c2w in enumerate(CAMS):
        g = render(c2w)
        np.save(tmp_path / f"d{i}.npy", g.depth.astype(np.float32))
        files[f"d{i}.npy"] = tmp_path / f"d{i}.npy"
        v = {"name": f"v{i}", "width": W, "height": H, "K": g.K.tolist(), "c2w": c2w.tolist(), "depth": f"d{i}.npy"}
        if i == 0:
            Image.fromarray((g.image * 255).astype(np.uint8)).save(tmp_path / "v0.png")
            files["v0.png"], v["image"] = tmp_path / "v0.png", "v0.png"
        views.append(v)
    spec = parse_spec(
        {
            "task": "novel_views",
            "views": views,
            "models": {"multiview": "seva-tiny"},
            "sampling": {"steps": 2},
            "multiview": {"window": 4, "size": 64},
        }
    )
    job = JobFolder.create(tmp_path / "job", spec, files)
    res = run_job(job)
    assert res.status == "done", res.error
    report = json.loads((job.root / "outputs/consistency.json").read_text())
    assert len(report["per_view"]) == 4 and report["pairs"] and report["mean"] > 0  # tiny random outputs: inconsistent
    assert Image.open(job.root / "outputs/consistency_heatmaps.png").size[0] > 4 * W
    assert res.metadata["consistency"]["mean"] == pytest.approx(report["mean"])
