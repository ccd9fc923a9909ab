"""The job contract: validation with field-named messages, schema, lossless job folders."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from backend.jobs import JobFolder, JobResult, JobSpec, JobSpecError, OutputFile, ProgressEvent, json_schema, parse_spec


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def view(name: str, deg: float = 0.0) -> dict:
    c2w = np.eye(4)
    c2w[:3, :3] = rot_z(deg)
    c2w[:3, 3] = [0.1, -2.0, 0.5]
    return {
        "name": name,
        "width": 64,
        "height": 48,
        "K": [[70.0, 0.0, 32.0], [0.0, 70.0, 24.0], [0.0, 0.0, 1.0]],
        "c2w": c2w.tolist(),
        "image": f"{name}.png",
    }


def good_spec() -> dict:
    return {
        "task": "relight_text",
        "views": [view("cam0"), view("cam1", 30.0), view("cam2", 61.7)],
        "reference_view": 1,
        "edit": {"prompt": "sunset over the sea"},
        "sampling": {"steps": 30, "lam": 0.02, "seed": 7},
        "models": {"editor": "ic-light-fc", "multiview": "seva-1.1"},
    }


def png_bytes(w: int, h: int, seed: int = 0) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 4), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_good_spec_parses_and_round_trips_through_a_job_folder(tmp_path):
    spec = parse_spec(good_spec())
    files = {v.image: png_bytes(64, 48, seed=i) for i, v in enumerate(spec.views)}
    job = JobFolder.create(tmp_path / "job1", spec, files)
    assert job.spec() == spec
    assert json.loads(job.spec_path.read_text()) == json.loads(spec.model_dump_json())
    for v in spec.views:
        assert job.input_path(v.image).read_bytes() == files[v.image]
    result = JobResult(job_id=job.job_id, status="done", outputs=[OutputFile(path="outputs/cam0.png", view="cam0")], metadata={"lam": 0.02})
    job.write_result(result)
    assert job.result() == result
    ev = ProgressEvent(job_id=job.job_id, stage="sampling", step=3, total=30, eta_s=12.5)
    job.append_log(ev)
    assert job.events() == [ev]
    # floats survive exactly
    assert job.spec().views[2].c2w == spec.views[2].c2w


def test_job_folder_refuses_missing_inputs_and_escaping_names(tmp_path):
    spec = parse_spec(good_spec())
    with pytest.raises(FileNotFoundError, match="cam0.png"):
        JobFolder.create(tmp_path / "j", spec, {})
    with pytest.raises(ValueError, match="inside inputs/"):
        JobFolder(tmp_path / "k").input_path("../../etc/passwd")


def test_schema_export_names_every_section():
    schema = json_schema()
    assert {"task", "views", "sampling", "edit", "models"} <= set(schema["properties"])
    assert "View" in schema["$defs"]


def mutate(path: str, value):
    spec = copy.deepcopy(good_spec())
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return spec


DELETE = object()
BAD_C2W_SCALE = (np.diag([2.0, 2.0, 2.0, 1.0])).tolist()
NAN_C2W = [[float("nan"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        ("views", [], "spec", "needs at least one view"),
        ("views.0.c2w", NAN_C2W, "views.0.c2w.0.0", "finite"),
        ("views.1.c2w", BAD_C2W_SCALE, "views.1.c2w", "rigid"),
        ("views.0.K", [[-5.0, 0, 32], [0, 70, 24], [0, 0, 1]], "views.0.K", "focal lengths must be > 0"),
        ("views.0.width", 20, "views.0", "does not match K"),
        ("reference_view", 3, "spec", "reference_view 3 is out of range"),
        ("task", "make_it_pretty", "task", "unknown task 'make_it_pretty'"),
        ("models.editor", "dalle", "models.editor", "unknown model 'dalle'"),
        ("sampling.lam", -0.1, "sampling.lam", "greater than or equal to 0"),
        ("sampling.steps", 0, "sampling.steps", "greater than or equal to 1"),
        ("sampling.seed", 2**40, "sampling.seed", "less than or equal to 4294967295"),
        ("sampling.seed", -1, "sampling.seed", "greater than or equal to 0"),
        ("views.2.name", "cam0", "spec", "duplicate view names ['cam0']"),
        ("views.0.width", 100_000, "views.0.width", "less than or equal to 4096"),
        ("sampling.steps", 10**6, "sampling.steps", "less than or equal to 1000"),
        ("sampling.colour", "red", "sampling.colour", "Extra inputs are not permitted"),
        # NaN / inf anywhere (pydantic refuses them in every float field, nested ones too)
        ("edit.envmap_rotation", [float("nan"), 0, 0], "edit.envmap_rotation.0", "finite number"),
        ("edit.envmap_strength", float("inf"), "edit.envmap_strength", "finite number"),
        ("sampling.lam", float("nan"), "sampling.lam", "finite number"),
        ("sampling.cfg_editor", float("inf"), "sampling.cfg_editor", "finite number"),
        ("views.0.K", [[70.0, 0, 32], [0, float("inf"), 24], [0, 0, 1]], "views.0.K.1.1", "finite number"),
        ("schema_version", 2, "schema_version", "Input should be 1"),
        ("views.0.K", [[5e7, 0, 32], [0, 5e7, 24], [0, 0, 1]], "views.0.K", "at most 1e+06"),
        ("views.0.c2w", [[1, 0, 0, 1e9], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "views.0.c2w", "within 1e+06 scene units"),
        ("multiview.chunk_strategy", "sideways", "multiview.chunk_strategy", "Input should be"),
        ("models.device", "gpu0", "models.device", "Input should be"),
        ("models.offload", "model", "spec", "models.offload / models.vae_tiling apply to the couple_* tasks"),
        ("models.vae_tiling", True, "spec", "models.offload / models.vae_tiling apply to the couple_* tasks"),
        ("sampling.join", "partner", "spec", "sampling.join: only a multi-view edit with alignment 'sigma'"),
        # file names: no folders, no control characters, no trailing newline
        ("views.0.image", "a.png\n", "views.0.image", "not allowed"),
        ("views.0.image", "a\x00.png", "views.0.image", "not allowed"),
        ("views.0.image", "../x.png", "views.0.image", "not allowed"),
        ("views.0.image", "x" * 300, "views.0.image", "not allowed"),
        ("edit.envmap", "sub/dir.hdr", "edit.envmap", "not allowed"),
    ],
)
def test_bad_specs_are_rejected_with_the_field_named(path, value, field, words):
    with pytest.raises(JobSpecError) as exc:
        parse_spec(mutate(path, value))
    text = str(exc.value)
    assert f"{field}: " in text, text
    assert words in text, text


def test_too_many_views_is_rejected():
    spec = good_spec()
    spec["views"] = [view(f"c{i}") for i in range(257)]
    with pytest.raises(JobSpecError, match="views: List should have at most 256 items"):
        parse_spec(spec)


def test_couple_tasks_need_prompts_and_no_views():
    spec = parse_spec({"task": "couple_images", "edit": {"prompts": ["a", "b"], "seeds": [1, 2]}, "models": {"generator": "flux-tiny"}})
    assert isinstance(spec, JobSpec) and spec.views == []
    with pytest.raises(JobSpecError, match="edit.prompts|needs at least 2 prompts"):
        parse_spec({"task": "couple_images", "edit": {"prompts": ["only one"]}, "models": {"generator": "flux-tiny"}})
    with pytest.raises(JobSpecError, match="models.generator: task 'couple_images' needs one of"):
        parse_spec({"task": "couple_images", "edit": {"prompts": ["a", "b"]}, "models": {"generator": "wan-tiny"}})
    with pytest.raises(JobSpecError, match="one seed per prompt"):
        parse_spec({"task": "couple_images", "edit": {"prompts": ["a", "b"], "seeds": [1]}, "models": {"generator": "flux-tiny"}})
    with pytest.raises(JobSpecError, match="4k\\+1"):
        parse_spec({"task": "couple_videos", "edit": {"prompts": ["a", "b"]}, "output": {"frames": 8}, "models": {"generator": "wan-tiny"}})


def test_json_text_input_is_validated_too():
    with pytest.raises(JobSpecError, match="Invalid JSON|json_invalid"):
        parse_spec("{not json")
    assert parse_spec(json.dumps(good_spec())).reference_view == 1


def test_schema_in_docs_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "job_spec.schema.json"
    assert json.loads(doc.read_text()) == json_schema(), "run: python -m backend schema --out docs/job_spec.schema.json"


def test_join_partner_with_sigma_alignment_is_accepted():
    spec = mutate("sampling.alignment", "sigma")
    spec["sampling"]["join"] = "partner"
    assert parse_spec(spec).sampling.join == "partner"


def test_view_passes_must_have_the_view_size(tmp_path):
    """A resized render or another view's pass is refused when the job is laid out, naming both sizes."""
    spec = parse_spec(good_spec())
    files = {v.image: png_bytes(64, 48) for v in spec.views}
    files["cam1.png"] = png_bytes(32, 24)
    with pytest.raises(ValueError, match=r"cam1.image \(cam1.png\) is 32x24, the view is 64x48"):
        JobFolder.create(tmp_path / "j", spec, files)
    d = good_spec()
    d["views"][0]["depth"] = "d0.npy"
    spec = parse_spec(d)
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((48, 63), np.float32))
    files = {v.image: png_bytes(64, 48) for v in spec.views} | {"d0.npy": buf.getvalue()}
    with pytest.raises(ValueError, match=r"cam0.depth \(d0.npy\) is 63x48"):
        JobFolder.create(tmp_path / "k", spec, files)


def test_input_files_are_known_by_content_not_name(tmp_path):
    from backend.input_files import InputFileError, inspect

    (tmp_path / "big.img").write_bytes(png_bytes(70, 30))
    assert (inspect(tmp_path / "big.img").kind, inspect(tmp_path / "big.img").pixels) == ("image", 2100)
    np.save(tmp_path / "d.npy", np.zeros((12, 34), np.float32))
    (tmp_path / "d.npy").rename(tmp_path / "d.png")
    info = inspect(tmp_path / "d.png")
    assert (info.kind, info.width, info.height) == ("npy", 34, 12)
    (tmp_path / "t.json").write_text("{}")
    assert not inspect(tmp_path / "t.json").is_raster
    (tmp_path / "cut.png").write_bytes(png_bytes(8, 8)[:20])
    with pytest.raises(InputFileError, match="not a readable image"):
        inspect(tmp_path / "cut.png")


@pytest.mark.parametrize("task", ["stylize", "spatial_edit"])
def test_sigma_alignment_is_refused_for_img2img_editors(task):
    d = good_spec() | {"task": task, "models": {}, "sampling": {"alignment": "sigma"}}
    for v in d["views"]:
        v |= {"depth": "d.npy", "object_index": "i.npy"}
    d["edit"]["objects"] = [{"index": 1}]
    with pytest.raises(JobSpecError, match="only the 'step' alignment keeps"):
        parse_spec(d)
    d["sampling"]["alignment"] = "step"
    assert parse_spec(d).task == task
