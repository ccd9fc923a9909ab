"""The add-on with its server backend: Start Server (a real uvicorn child process with this
interpreter), a rig job over HTTP from the panel's Run, write-back, Stop Server, clear failures."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server_prefs(cycles_scene, tmp_path):
    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    prefs.backend, prefs.server_url = "SERVER", f"http://127.0.0.1:{free_port()}"
    prefs.server_python, prefs.server_jobs_dir, prefs.server_token = sys.executable, str(tmp_path / "server_jobs"), "tok-123"
    bpy.ops.mesh.primitive_monkey_add()
    yield prefs
    bpy.ops.coupled_edit.stop_server()


def test_run_on_a_server_started_from_blender(server_prefs, tmp_path):
    assert bpy.ops.coupled_edit.start_server() == {"FINISHED"}
    assert bpy.ops.coupled_edit.check_backend() == {"FINISHED"}
    s = bpy.context.scene.coupled_edit
    s.task, s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = "novel_views", 4, "seva-tiny", 2, 64, str(tmp_path / "jobs")
    bpy.data.objects["Suzanne"].select_set(True)
    bpy.ops.coupled_edit.build_turntable()
    assert bpy.ops.coupled_edit.run() == {"FINISHED"}
    job = Path(s.last_job)
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "done", result.get("error")
    server_id = (job / "server_job_id").read_text()
    assert (Path(server_prefs.server_jobs_dir) / server_id / "result.json").exists()  # it ran in the server's process
    assert all((job / o["path"]).exists() for o in result["outputs"])  # outputs came back into the local job folder
    assert bpy.ops.coupled_edit.apply_strips() == {"FINISHED"}
    assert len(bpy.context.scene.sequence_editor.strips) == 3


def test_a_stopped_server_or_wrong_token_fails_the_job_with_the_reason(server_prefs, tmp_path):
    s = bpy.context.scene.coupled_edit
    s.task, s.turntable_count, s.model, s.steps, s.working_size, s.output_dir = "novel_views", 3, "seva-tiny", 2, 64, str(tmp_path / "jobs")
    bpy.data.objects["Suzanne"].select_set(True)
    bpy.ops.coupled_edit.build_turntable()
    with pytest.raises(RuntimeError, match="no Coupled Edit server answers at http://127.0.0.1"):
        bpy.ops.coupled_edit.run()  # nothing listens at the address yet
    (first,) = (tmp_path / "jobs").iterdir()
    assert json.loads((first / "result.json").read_text())["status"] == "failed"  # the reason stays in the job folder
    assert bpy.ops.coupled_edit.start_server() == {"FINISHED"}
    server_prefs.server_token = "wrong"
    with pytest.raises(RuntimeError, match="refused the token"):
        bpy.ops.coupled_edit.run()
