"""Results written back as image datablocks, camera backgrounds and sequencer strips, non-destructively."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture()
def wb(addon):
    return importlib.import_module("coupled_edit.scene_io.writeback")


def finished_job(tmp_path, names, status="done"):
    """A job folder as the backend leaves it: result.json + one PNG per view."""
    from PIL import Image

    from backend.jobs import JobFolder, JobResult, OutputFile, parse_spec

    views = [{"name": n, "width": 24, "height": 16, "K": [[20, 0, 12], [0, 20, 8], [0, 0, 1]], "c2w": np.eye(4).tolist()} for n in names]
    views[0]["image"] = "in.png"
    (tmp_path / "in.png").parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "in.png")
    job = JobFolder.create(tmp_path / "job", parse_spec({"task": "novel_views", "views": views}), {"in.png": tmp_path / "in.png"})
    outs, rng = [], np.random.default_rng(0)
    for n in names[1:]:
        arr = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(job.outputs / f"{n}.png")
        outs.append(OutputFile(path=f"outputs/{n}.png", view=n))
    job.write_result(JobResult(job_id="job", status=status, outputs=outs, error=None if status == "done" else "boom"))
    return job.root


def rig(scene, n):
    cams = []
    for i in range(n):
        cam = bpy.data.objects.new(f"cam{i}", bpy.data.cameras.new(f"cam{i}"))
        scene.collection.objects.link(cam)
        cams.append(cam)
    return cams


def test_strips_images_backgrounds_and_sequencer(wb, empty_scene, tmp_path):
    cams = rig(empty_scene, 4)
    folder = finished_job(tmp_path, [c.name for c in cams])
    user_img = bpy.data.images.new("user", 4, 4)
    cams[1].data.background_images.new().image = user_img  # the user's own background stays
    se = empty_scene.sequence_editor_create()
    se.strips.new_image("user strip", str(folder / "outputs" / "cam1.png"), 3, 1)
    res = wb.apply_as_strips(empty_scene, cams, folder)
    assert set(res.images) == {"cam1", "cam2", "cam3"} and res.backgrounds == ["cam1", "cam2", "cam3"]
    for name, img_name in res.images.items():
        img = bpy.data.images[img_name]
        assert img.packed_file is not None and img.size[:] == (24, 16)
        from PIL import Image

        src = np.asarray(Image.open(folder / "outputs" / f"{name}.png").convert("RGBA"), dtype=np.float32) / 255
        px = np.array(img.pixels[:], dtype=np.float32).reshape(16, 24, 4)[::-1]  # Blender rows go bottom-up
        assert np.abs(px - src).max() < 1e-4
    bgs = cams[1].data.background_images
    assert len(bgs) == 2 and bgs[0].image == user_img and bgs[1].image.name == res.images["cam1"]
    assert res.channel == 4
    new = sorted((s for s in se.strips if s.channel == 4), key=lambda s: s.frame_final_start)
    assert [s.name.rsplit(" ", 1)[1] for s in new] == ["cam1", "cam2", "cam3"]
    assert [s.frame_final_start for s in new] == [1, 2, 3] and all(s.frame_final_duration == 1 for s in new)
    assert "user strip" in se.strips and se.strips["user strip"].channel == 3


def test_refuses_unfinished_or_mismatched_jobs(wb, empty_scene, tmp_path):
    cams = rig(empty_scene, 3)
    failed = finished_job(tmp_path, [c.name for c in cams], status="failed")
    with pytest.raises(ValueError, match="ended as 'failed': boom"):
        wb.apply_as_strips(empty_scene, cams, failed)
    (failed / "result.json").unlink()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        wb.apply_as_strips(empty_scene, cams, failed)
    ok = finished_job(tmp_path / "b", [c.name for c in cams])
    with pytest.raises(ValueError, match="not in the rig: \\['cam2'\\]"):
        wb.apply_as_strips(empty_scene, cams[:2], ok)
    assert not [i for i in bpy.data.images if i.name.startswith("CE ")]  # nothing half-applied
    data = json.loads((ok / "result.json").read_text())
    assert data["status"] == "done"


def test_strips_survive_moving_the_project_and_f12_still_renders_the_scene(wb, empty_scene, tmp_path):
    import shutil

    cams = rig(empty_scene, 3)
    folder = finished_job(tmp_path / "jobs", [c.name for c in cams])
    project = tmp_path / "project"
    project.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
    scene = bpy.context.scene
    assert scene.render.use_sequencer
    res = wb.apply_as_strips(scene, [scene.objects[c] for c in ("cam0", "cam1", "cam2")], folder, label="relit")
    assert not scene.render.use_sequencer and any("F12 still renders the 3D scene" in n for n in res.notes)
    assert all(f.startswith("//coupled_edit_results/relit/") for f in res.files.values()), res.files
    bpy.ops.wm.save_mainfile()
    shutil.rmtree(tmp_path / "jobs")  # the job folder is gone ...
    shutil.move(str(project), str(tmp_path / "moved"))  # ... and the project moved
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "moved" / "shot.blend"))
    se = bpy.context.scene.sequence_editor
    strips = [st for st in se.strips if st.name.startswith("CE relit")]
    assert len(strips) == 2
    for st in strips:
        path = Path(bpy.path.abspath(st.directory)) / st.elements[0].filename
        assert path.is_file(), path


def test_strips_fall_back_to_the_sequences_collection_of_older_blenders(wb):
    class Old:  # Blender 4.2/4.3: SequenceEditor has sequences / sequences_all, no strips
        sequences, sequences_all = ["a"], ["a", "b"]

    assert wb._strip_collections(Old()) == (["a"], ["a", "b"])
