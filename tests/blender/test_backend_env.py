"""Set Up Backend for real (issue 15): a new Python environment in a temporary folder with this machine's
CPU torch and the backend's packages from the package registry, then a job from the panel that starts
the environment's server by itself (loopback, random token), Check Backend, Remove Backend."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def test_set_up_backend_then_run_a_job_through_its_server(cycles_scene, tmp_path):
    envsetup = importlib.import_module("coupled_edit.backend.envsetup")
    launcher = importlib.import_module("coupled_edit.backend.server.launcher")
    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    prefs.backend, prefs.env_dir, prefs.setup_tool = "ENVIRONMENT", str(tmp_path / "env"), "pip"
    # this machine's CPU wheel of torch (an unpinned torch would pull a multi-GB CUDA build)
    prefs.torch_build, prefs.torch_requirement = "default", "torch==2.13.0"
    s = cycles_scene.coupled_edit
    s.task, s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = "novel_views", 3, "seva-tiny", 2, 64, str(tmp_path / "jobs")
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.coupled_edit.build_turntable()
    with pytest.raises(RuntimeError, match="Set Up Backend"):
        bpy.ops.coupled_edit.run()  # says what to do before anything renders
    assert bpy.ops.coupled_edit.setup_backend() == {"FINISHED"}
    status = envsetup.env_status(tmp_path / "env")
    assert status["present"] and status["in_sync"] and status["versions"]["torch"].startswith("2.13.0")
    assert "installing torch" in (tmp_path / "env/setup.log").read_text()
    try:
        assert bpy.ops.coupled_edit.run() == {"FINISHED"}
        server = launcher.managed_server()
        assert server["running"] and server["url"].startswith("http://127.0.0.1:")
        assert launcher._MANAGED["token"] and len(launcher._MANAGED["token"]) >= 22
        result = json.loads((Path(s.last_job) / "result.json").read_text())
        assert result["status"] == "done" and sum(1 for o in result["outputs"] if o["view"]) == 2
        assert bpy.ops.coupled_edit.check_backend() == {"FINISHED"}
    finally:
        assert bpy.ops.coupled_edit.remove_backend() == {"FINISHED"}
    assert not (tmp_path / "env").exists() and not launcher.managed_server()["running"]
