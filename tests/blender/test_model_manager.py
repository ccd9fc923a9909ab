"""The model manager in Blender (issue 15): Download with progress and cancel/resume against a stand-in
hub, the token handed only to the download process, local copies per model, and the preflight that names
every missing model (and a GPU that is too small) before anything renders."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakehub import FakeHub  # noqa: E402

TIMER, ESC = SimpleNamespace(type="TIMER"), SimpleNamespace(type="ESC")


@pytest.fixture()
def prefs(cycles_scene, tmp_path, monkeypatch):
    p = bpy.context.preferences.addons["coupled_edit"].preferences
    p.model_cache, p.offline, p.env_dir = str(tmp_path / "hf"), False, str(tmp_path / "no_env")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    yield p
    p.hf_token = ""
    p.model_paths.clear()


def test_download_with_progress_cancel_and_resume_and_the_token_stays_private(prefs, tmp_path, monkeypatch):
    needs = importlib.import_module("coupled_edit.backend.model_needs")
    registry = importlib.import_module("coupled_edit.backend.registry")
    stepwise = importlib.import_module("coupled_edit.operators.stepwise")
    seva = registry.MODELS["seva-1.1"]
    weights = os.urandom(24 << 20)  # the hub library writes in 10 MB pieces: progress moves in those steps
    hub = FakeHub({seva.repo: {seva.filename: weights}}, gated=[seva.repo], chunk_delay=0.03)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with pytest.raises(RuntimeError, match="is gated: accept its licence at https://huggingface.co/stabilityai"):
        bpy.ops.coupled_edit.download_model(key="seva-1.1")  # no token yet
    prefs.hf_token = "hf_secret_token_123"
    # the click path, one step per timer tick: progress, then Esc
    import types

    op_cls = bpy.types.COUPLED_EDIT_OT_download_model
    op = SimpleNamespace(_timer=None, report=lambda *a: None, bl_label=op_cls.bl_label, key="seva-1.1")
    for name in ("start", "finished", "_stop", "modal"):
        setattr(op, name, types.MethodType(getattr(op_cls, name), op))
    task = stepwise.TASKS[bpy.context.scene.name] = op.start(bpy.context)
    import time

    deadline = time.monotonic() + 60
    while task.fraction == 0.0 and time.monotonic() < deadline:
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
        time.sleep(0.05)
    assert 0 < task.fraction < 1 and "seva-1.1:" in task.message and "GB" in task.message
    assert op.modal(bpy.context, ESC) == {"CANCELLED"} and task.proc.poll() is not None
    assert not needs.in_cache(seva)
    assert bpy.ops.coupled_edit.download_model(key="seva-1.1") == {"FINISHED"}  # again: it finishes
    assert needs.in_cache(seva)
    assert "Bearer hf_secret_token_123" in hub.auth
    for f in tmp_path.rglob("*"):  # never written into the cache, logs or anything else
        if f.is_file() and f.stat().st_size < (1 << 20):
            assert b"hf_secret_token_123" not in f.read_bytes(), f


def test_preflight_names_every_missing_model_and_a_too_small_gpu(prefs, tmp_path):
    envsetup = importlib.import_module("coupled_edit.backend.envsetup")
    scene = bpy.context.scene
    s = scene.coupled_edit
    s.task, s.prompt, s.model, s.editor, s.output_dir, s.turntable_count = "relight_text", "sunset", "seva-1.1", "ic-light-fc", str(
        tmp_path / "jobs"), 3  # fmt: skip
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.coupled_edit.build_turntable()
    with pytest.raises(RuntimeError, match="not downloaded yet: seva-1.1, seva-vae, seva-clip, ic-light-fc, ic-light-base"):
        bpy.ops.coupled_edit.run()
    assert not (tmp_path / "jobs").exists()  # nothing rendered
    for key in ("seva-1.1", "seva-vae", "seva-clip", "ic-light-fc", "ic-light-base"):  # the user's own copies
        (tmp_path / "mine" / key).mkdir(parents=True)
        assert bpy.ops.coupled_edit.set_model_path(key=key, filepath=str(tmp_path / "mine" / key)) == {"FINISHED"}
    # a backend environment on an 8 GiB GPU (its marker, as Set Up Backend leaves it)
    root = tmp_path / "env"
    py = envsetup.env_python(root)
    py.parent.mkdir(parents=True)
    py.write_text("")
    torch = envsetup.torch_build("cu126")
    (root / envsetup.MARKER).write_text(json.dumps({"digest": envsetup.requirements_digest(torch), "torch": torch.__dict__,
                                                    "versions": {"torch": "2.9", "cuda": True, "vram_gb": 8.0}}))  # fmt: skip
    prefs.backend, prefs.env_dir = "ENVIRONMENT", str(root)
    s.working_size = 576
    with pytest.raises(RuntimeError, match=r"needs about 9.2 GiB of GPU memory at this size; this GPU has 8.0 GiB: use Working Size 384"):
        bpy.ops.coupled_edit.run()
    prefs.backend = "IN_PROCESS"


def test_the_offline_switch_applies_at_once(prefs, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    preferences = importlib.import_module("coupled_edit.preferences")
    prefs.offline = True
    preferences.apply_environment(bpy.context)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and c.HF_HUB_OFFLINE is True
    prefs.offline = False
    preferences.apply_environment(bpy.context)
    assert "HF_HUB_OFFLINE" not in os.environ and c.HF_HUB_OFFLINE is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set outside Blender: the switch never clears it
    preferences.apply_environment(bpy.context)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    c.HF_HUB_OFFLINE = True


def test_sizes_come_from_the_hub_and_show_in_the_list(prefs, monkeypatch):
    registry = importlib.import_module("coupled_edit.backend.registry")
    model_ops = importlib.import_module("coupled_edit.operators.model_ops")
    seva = registry.MODELS["seva-1.1"]
    hub = FakeHub({seva.repo: {seva.filename: b"s" * (3 << 20)}})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    assert bpy.ops.coupled_edit.model_sizes() == {"FINISHED"}
    assert model_ops.SIZES["seva-1.1"] == 3 << 20 and model_ops.size_text("seva-1.1") == "3 MB"
    assert "not found" in model_ops.SIZES["sd15"]  # the stand-in hub has only SEVA
