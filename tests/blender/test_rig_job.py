"""A rig job driven by tick(): renders one view per tick, backend in a worker thread, cancel."""

from __future__ import annotations

import importlib
import json
import time

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def jobs_mod(addon):
    return importlib.import_module("coupled_edit.scene_io.jobs")


@pytest.fixture()
def rig(addon, empty_scene):
    rigs = importlib.import_module("coupled_edit.scene_io.rigs")
    scene = empty_scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 2
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 64
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
    cams = rigs.build_turntable(bpy.context, [bpy.data.objects["Suzanne"]], count=6)
    scene.camera = cams[0]
    return scene, cams


def snapshot(scene):
    vs, r = scene.view_settings, scene.render
    images = sorted(i.name for i in bpy.data.images if i.type != "RENDER_RESULT")  # Blender adds its Render Result slot
    return (vs.view_transform, vs.look, vs.exposure, r.dither_intensity, r.film_transparent, r.filepath, scene.camera.name, images)


def pump(job, limit_s=300):
    ticks, t0 = 0, time.time()
    while (delay := job.tick()) is not None:
        ticks += 1
        time.sleep(min(delay, 0.02))
        assert time.time() - t0 < limit_s
    return ticks


def test_tick_renders_then_runs_the_backend_and_reports_progress(jobs_mod, rig, tmp_path):
    scene, cams = rig
    before = snapshot(scene)
    job = jobs_mod.RigJob(
        scene,
        cams,
        tmp_path / "job",
        "novel_views",
        render=[True] + [False] * 5,
        models={"multiview": "seva-tiny"},
        sampling={"steps": 3},
        multiview={"window": 4, "size": 64},
    )
    fractions = []
    while (delay := job.tick()) is not None:
        fractions.append(job.status.fraction)
        if job.status.state == "rendering":
            assert scene.view_settings.view_transform == "Standard"
        time.sleep(min(delay, 0.02))
    assert job.status.state == "done", job.status.message
    assert fractions == sorted(fractions) and job.status.fraction == 1.0
    assert snapshot(scene) == before  # renders left nothing behind
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert len([o for o in result["outputs"] if o["view"]]) == 5


def test_cancel_while_rendering_leaves_the_scene_unchanged(jobs_mod, rig, tmp_path):
    scene, cams = rig
    before = snapshot(scene)
    job = jobs_mod.RigJob(
        scene, cams, tmp_path / "job", "novel_views", render=[True, True] + [False] * 4, models={"multiview": "seva-tiny"}
    )
    job.tick()
    job.cancel()
    assert job.tick() is None and job.status.state == "cancelled"
    assert snapshot(scene) == before
    assert not (tmp_path / "job" / "job.json").exists()  # no half-made job


def test_cancel_while_sampling_stops_between_steps(jobs_mod, rig, tmp_path):
    scene, cams = rig
    job = jobs_mod.RigJob(
        scene,
        cams,
        tmp_path / "job",
        "novel_views",
        render=[True] + [False] * 5,
        models={"multiview": "seva-tiny"},
        sampling={"steps": 200},
        multiview={"window": 4, "size": 64},
    )
    while job.status.state == "rendering" or job.status.stage in ("loading", "rendering"):
        job.tick()
        time.sleep(0.02)
    job.cancel()
    pump(job)
    assert job.status.state == "cancelled"
    assert json.loads((tmp_path / "job" / "result.json").read_text())["status"] == "cancelled"


def test_a_backend_failure_is_reported_not_raised(jobs_mod, rig, tmp_path):
    scene, cams = rig
    # a spec the backend refuses (Flux is not a multi-view model): a failed status with its message
    job = jobs_mod.RigJob(scene, cams[:2], tmp_path / "job", "novel_views", render=[True, False], models={"multiview": "flux-tiny"})
    pump(job)
    assert job.status.state == "failed" and "is not a SEVA model" in job.status.message


def test_photo_rig_job_runs_without_rendering(jobs_mod, rig, tmp_path):
    import numpy as np
    from PIL import Image

    scene, cams = rig
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    cams[0].data.background_images.new().image = bpy.data.images.load(str(tmp_path / "p.png"))
    job = jobs_mod.RigJob(
        scene,
        cams,
        tmp_path / "job",
        "novel_views",
        photos=True,
        models={"multiview": "seva-tiny"},
        sampling={"steps": 2},
        multiview={"window": 4, "size": 64},
    )
    pump(job)
    assert job.status.state == "done", job.status.message
    inputs = sorted(p.name for p in (tmp_path / "job" / "inputs").iterdir())
    assert inputs == ["000_Coupled_Edit_Rig_00.png"]  # nothing rendered: only the photo, byte for byte
    assert (tmp_path / "job" / "inputs" / inputs[0]).read_bytes() == (tmp_path / "p.png").read_bytes()


def test_every_problem_is_reported_before_the_first_view_renders(addon, cycles_scene, tmp_path, monkeypatch):
    """Orthographic, panoramic and mirrored cameras, a one-camera novel_views, passes a photo rig lacks and
    (offline) every missing model: one error naming all of it, and nothing written."""
    import huggingface_hub.constants as c

    jobs = importlib.import_module("coupled_edit.scene_io.jobs")
    bpy.ops.mesh.primitive_cube_add()
    cams = []
    for name, kind in (("Front", "PERSP"), ("Top", "ORTHO"), ("Dome", "PANO"), ("Mirror", "PERSP")):
        cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        cam.data.type = kind
        cam.location = (0, -6, 0)
        cam.rotation_euler = (1.5708, 0, 0)
        cycles_scene.collection.objects.link(cam)
        cams.append(cam)
    cams[3].scale = (-1, 1, 1)
    with pytest.raises(jobs.RigError) as exc:
        jobs.RigJob(cycles_scene, cams, tmp_path / "a", "novel_views", render=[True, False, False, False])
    text = str(exc.value)
    assert "'Top' is orthographic" in text and "'Dome' is panoramic" in text and "Mirror: " in text and "mirrored" in text
    assert not (tmp_path / "a").exists()
    with pytest.raises(jobs.RigError, match="novel_views needs at least two cameras"):
        jobs.RigJob(cycles_scene, cams[:1], tmp_path / "b", "novel_views", models={"multiview": "seva-tiny"})
    with pytest.raises(jobs.RigError, match="depth ControlNet needs geometry passes"):
        jobs.RigJob(cycles_scene, cams[:1], tmp_path / "c", "stylize", photos=True, edit={"prompt": "x"}, models={"multiview": "seva-tiny",
                    "editor": "sd-tiny"})  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(jobs.RigError) as exc:
        jobs.RigJob(cycles_scene, cams[:1], tmp_path / "d", "relight_text", edit={"prompt": "x"},
                    models={"multiview": "seva-1.1", "editor": "ic-light-fc"})  # fmt: skip
    text = str(exc.value)
    for key in ("seva-1.1", "seva-vae", "seva-clip", "ic-light-fc", "ic-light-base"):
        assert key in text, (key, text)
    assert "5 model(s)" in text and "models.paths" in text and "huggingface.co/stabilityai/stable-virtual-camera" in text
    assert not (tmp_path / "d").exists()
