"""Coupled Flux / SD / Wan on tiny random models built offline, against the stock diffusers pipelines."""

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

from backend.jobs import JobFolder, parse_spec
from backend.models.weights import ModelUnavailable
from backend.pipelines.coupled_t2i import ImageRequest, couple_images, load_t2i
from backend.pipelines.coupled_t2v import VideoRequest, couple_videos, load_t2v, wan_denormalize, wan_normalize
from backend.runner import run_job

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Japanese samurai", "astronaut on Mars"]


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def flux():
    return load_t2i("flux-tiny")


@pytest.fixture(scope="module")
def wan():
    return load_t2v("wan-tiny")


def test_flux_lam0_reproduces_flux_pipeline_from_a_local_folder(tmp_path_factory, flux):
    # save the tiny pipeline in the diffusers layout and load it the way real weights load
    folder = tmp_path_factory.mktemp("flux_local")
    flux.pipe.save_pretrained(folder, safe_serialization=True)
    assert list(folder.glob("transformer/*.safetensors"))
    model = load_t2i("flux-schnell", source=str(folder))
    model.defaults.update(max_sequence_length=32)
    out = couple_images(model, ImageRequest(PROMPTS, lam=0.0, seeds=[3, 4], steps=4, width=64, height=64))
    ref = model.pipe(
        prompt=PROMPTS, num_inference_steps=4, height=64, width=64, generator=gens(3, 4), max_sequence_length=32, output_type="latent"
    )
    torch.testing.assert_close(out.latents, ref.images, rtol=1e-5, atol=1e-5)
    ref_img = model.pipe(prompt=PROMPTS, num_inference_steps=4, height=64, width=64, generator=gens(3, 4), max_sequence_length=32)
    for mine, theirs in zip(out.images, ref_img.images, strict=True):
        assert np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int)).max() <= 1


def test_flux_dev_guidance_embedding_lam0_matches_pipeline():
    model = load_t2i("flux-dev-tiny")
    out = couple_images(model, ImageRequest(PROMPTS, lam=0.0, seeds=[5, 6], steps=3, guidance=4.0))
    ref = model.pipe(
        prompt=PROMPTS,
        num_inference_steps=3,
        height=64,
        width=64,
        guidance_scale=4.0,
        generator=gens(5, 6),
        max_sequence_length=32,
        output_type="latent",
    )
    torch.testing.assert_close(out.latents, ref.images, rtol=1e-5, atol=1e-5)
    assert out.metadata["guidance"] == 4.0


def test_flux_true_cfg_lam0_matches_pipeline(flux):
    req = ImageRequest(PROMPTS, lam=0.0, seeds=[2, 3], steps=3, true_cfg=3.0, negative_prompt="blurry")
    out = couple_images(flux, req)
    ref = flux.pipe(
        prompt=PROMPTS,
        negative_prompt=["blurry"] * 2,
        true_cfg_scale=3.0,
        num_inference_steps=3,
        height=64,
        width=64,
        generator=gens(2, 3),
        max_sequence_length=32,
        output_type="latent",
    )
    torch.testing.assert_close(out.latents, ref.images, rtol=1e-5, atol=1e-5)


def test_sd_family_lam0_matches_stable_diffusion_pipeline_with_ddpm():
    from diffusers import DDPMScheduler

    model = load_t2i("sd-tiny")
    model.pipe.scheduler = DDPMScheduler.from_config(model.pipe.scheduler.config)
    req = ImageRequest(PROMPTS, lam=0.0, seeds=[1, 2], steps=5, guidance=6.0, step="ddpm")
    out = couple_images(model, req)
    ref = model.pipe(
        prompt=PROMPTS, num_inference_steps=5, height=64, width=64, guidance_scale=6.0, generator=gens(1, 2), output_type="latent"
    )
    torch.testing.assert_close(out.latents, ref.images, rtol=1e-4, atol=1e-4)


def _distances(model, couple, request_cls, lams, **kw):
    out = []
    for lam in lams:
        lat = couple(model, request_cls(PROMPTS, lam=lam, seeds=[1, 2], **kw)).latents
        out.append(float((lat[0] - lat[1]).norm()))
    return out


def test_flux_coupling_shrinks_latent_distance_monotonically(flux):
    d = _distances(flux, couple_images, ImageRequest, [0.0, 0.03, 0.1, 0.3, 1.0], steps=6)
    assert all(b < a for a, b in zip(d, d[1:], strict=False)), d
    assert d[-1] < 0.5 * d[0], d


def test_wan_coupling_shrinks_latent_distance_monotonically(wan):
    d = _distances(wan, couple_videos, VideoRequest, [0.0, 0.03, 0.1, 0.3, 1.0], steps=4)
    assert all(b < a for a, b in zip(d, d[1:], strict=False)), d
    assert d[-1] < 0.6 * d[0], d


def test_wan_lam0_reproduces_wan_pipeline_with_euler(wan):
    out = couple_videos(wan, VideoRequest(PROMPTS, lam=0.0, seeds=[7, 8], steps=4, negative_prompt="blurry"))
    pipe = wan.pipe
    saved = pipe.scheduler
    pipe.scheduler = wan.euler_scheduler(3.0)
    try:
        ref = pipe(
            prompt=PROMPTS,
            negative_prompt=["blurry"] * 2,
            num_inference_steps=4,
            height=32,
            width=32,
            num_frames=9,
            guidance_scale=5.0,
            generator=gens(7, 8),
            max_sequence_length=32,
            output_type="latent",
        ).frames
    finally:
        pipe.scheduler = saved
    torch.testing.assert_close(out.latents, ref, rtol=1e-5, atol=1e-5)
    assert out.videos.shape == (2, 9, 32, 32, 3)


def test_flux_latent_packing_round_trips_exactly(flux):
    pipe = flux.pipe
    x = torch.randn(2, 4, 16, 12)
    packed = pipe._pack_latents(x, 2, 4, 16, 12)
    assert packed.shape == (2, 8 * 6, 16)
    vsf = pipe.vae_scale_factor  # unpack takes the image size in pixels
    assert torch.equal(pipe._unpack_latents(packed, 16 * vsf, 12 * vsf, vsf), x)


def test_wan_mean_std_normalisation_round_trips(wan):
    vae = wan.pipe.vae
    z = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    back = wan_denormalize(wan_normalize(z, vae), vae)
    torch.testing.assert_close(back, z, rtol=1e-12, atol=1e-12)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float64).view(1, 16, 1, 1, 1).expand(1, 16, 3, 4, 4)
    assert torch.equal(wan_normalize(mean, vae), torch.zeros_like(mean))
    # and the pipeline's own decode-side formula, applied by hand, agrees
    std = torch.tensor(vae.config.latents_std, dtype=torch.float64).view(1, 16, 1, 1, 1)
    lat = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(wan_denormalize(lat, vae), lat / (1.0 / std) + mean[:, :, :1, :1, :1])


def test_gated_or_missing_weights_offline_give_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailable, match="not in the local cache and this machine is offline"):
        load_t2i("flux-dev", device="cpu")
    with pytest.raises(ModelUnavailable, match="tiny random model"):
        load_t2i("flux-tiny", source=str(tmp_path))


def _job(tmp_path, **over):
    spec = {
        "task": "couple_images",
        "edit": {"prompts": PROMPTS, "seeds": [1, 2]},
        "models": {"generator": "flux-tiny"},
        "sampling": {"steps": 4},
    }
    spec.update(over)
    return JobFolder.create(tmp_path / "job", parse_spec(spec))


def test_run_job_reports_progress_and_cancels_cleanly(tmp_path):
    job = _job(tmp_path)
    seen = []
    calls = []
    res = run_job(job, progress=seen.append, should_cancel=lambda: calls.append(1) or len(calls) > 2)
    assert res.status == "cancelled" and "before step 3 of 4" in res.error
    assert job.result().status == "cancelled"
    stages = [e.stage for e in job.events()]
    assert stages[0] == "loading" and stages[-1] == "cancelled" and stages.count("sampling") == 2
    assert [e.stage for e in seen] == stages


def test_every_task_a_spec_may_name_is_implemented():
    from backend.registry import TASKS
    from backend.runner import IMPLEMENTED

    assert set(IMPLEMENTED) == set(TASKS)


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_help_lists_only_working_subcommands():
    r = _cli("--help")
    assert r.returncode == 0
    listed = set(r.stdout.split("{", 1)[1].split("}", 1)[0].split(","))
    # every one of these is exercised end to end (novel-views in test_novel_views.py, models in test_models_list.py,
    # serve in test_server.py, doctor in test_envsetup.py, eval-toy in test_toy_models.py, ray-batch in test_ray_cluster.py)
    assert listed == {
        "couple-images", "couple-videos", "novel-views", "run-job", "validate-job", "models", "schema", "serve", "doctor", "eval-toy",
        "ray-batch",
    }  # fmt: skip


def test_cli_couple_images_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = _cli(
        "couple-images",
        "--model",
        "tiny",
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        "--lam",
        "0.5",
        "--width",
        "96",
        "--height",
        "64",
        "--compare",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "tiny random weights" in r.stdout and "latent RMS distance" in r.stdout
    sbs = Image.open(out / "outputs/side_by_side.png")
    assert sbs.width == 2 * 96 + 4
    for i in range(2):
        assert Image.open(next(out.glob(f"outputs/image_{i:02d}_*.png"))).size == (96, 64)
    coupled = json.loads((out / "outputs/metadata.json").read_text())["latent_rms_distance"]["0-1"]
    free = json.loads((out / "uncoupled/outputs/metadata.json").read_text())["latent_rms_distance"]["0-1"]
    assert coupled < free
    assert json.loads((out / "result.json").read_text())["status"] == "done"
    # the job folder can be validated and rerun as it is
    assert _cli("validate-job", str(out)).returncode == 0
    again = _cli("run-job", str(out))
    assert again.returncode == 0, again.stderr
    # an existing job is never overwritten by accident
    r2 = _cli("couple-images", "--model", "tiny", "--prompt", "a", "--prompt", "b", "--out", str(out))
    assert r2.returncode != 0 and "--overwrite" in r2.stderr


def test_cli_couple_videos_end_to_end(tmp_path):
    from backend.media import read_video

    out = tmp_path / "vid"
    r = _cli(
        "couple-videos",
        "--model",
        "tiny",
        "--prompt",
        "a cat surfing",
        "--prompt",
        "a dog skiing",
        "--frames",
        "9",
        "--steps",
        "3",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    video = read_video(out / "outputs/side_by_side.mp4")
    assert video.shape == (9, 32, 2 * 32 + 4, 3)
    assert read_video(next(out.glob("outputs/video_00_*.mp4"))).shape == (9, 32, 32, 3)


def test_cli_schema_and_validate_job_report_errors(tmp_path):
    assert _cli("schema", "--out", str(tmp_path / "schema.json")).returncode == 0
    assert "JobSpec" in (tmp_path / "schema.json").read_text()
    bad = tmp_path / "job.json"
    bad.write_text(
        json.dumps(
            {"task": "couple_images", "edit": {"prompts": ["a", "b"]}, "models": {"generator": "flux-tiny"}, "sampling": {"lam": -1}}
        )
    )
    r = _cli("validate-job", str(bad))
    assert r.returncode == 2 and "sampling.lam" in r.stderr


def test_model_cache_keeps_a_jobs_models_and_drops_the_previous_jobs():
    from backend.runner import ModelCache

    loads = []
    cache = ModelCache()

    def loader(name):
        return lambda: loads.append(name) or name

    cache.begin_job()  # a relight: SEVA, then the editor -- both stay
    cache.get(("seva",), loader("seva"))
    cache.get(("editor",), loader("editor"))
    cache.begin_job()  # the next relight reuses both without loading
    assert cache.get(("seva",), loader("seva")) == "seva" and cache.get(("editor",), loader("editor")) == "editor"
    assert loads == ["seva", "editor"]
    cache.begin_job()  # a generation job: its model replaces the unused ones
    cache.get(("flux",), loader("flux"))
    assert set(cache._models) == {("flux",)}
