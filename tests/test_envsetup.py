"""The backend environment (issue 15): the torch build chosen from the machine, requirements that match
the project's pins, a setup that can be cancelled and resumed, the doctor report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend import envsetup

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "system, gpu, key",
    [
        ("Linux", (575.51, "NVIDIA H200"), "cu128"),
        ("Linux", (565.57, "RTX 4090"), "cu126"),
        ("Linux", (535.54, "RTX 3090"), "cu118"),
        ("Linux", (470.82, "GTX 1080"), "cpu"),
        ("Windows", (570.26, "RTX 4080"), "cu126"),  # Windows needs 570.65 for CUDA 12.8
        ("Windows", (572.16, "RTX 4080"), "cu128"),
        ("Darwin", None, "default"),
        ("Linux", None, "cpu"),
    ],
)
def test_the_torch_build_follows_the_machine(system, gpu, key):
    choice = envsetup.detect_torch(system, gpu)
    assert choice.key == key
    if key.startswith("cu"):
        assert choice.index_url.endswith(f"/whl/{key}") and gpu[1] in choice.label
    if key == "cpu" and gpu:
        assert "older than any CUDA build" in choice.label  # says why, and what to do


def test_nvidia_smi_is_read(monkeypatch):
    monkeypatch.setattr(envsetup.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    fake = lambda *a, **k: SimpleNamespace(returncode=0, stdout="570.86.15, NVIDIA H200\n")  # noqa: E731
    assert envsetup.nvidia_gpu(run=fake) == (570.86, "NVIDIA H200")
    monkeypatch.setattr(envsetup.shutil, "which", lambda name: None)
    assert envsetup.nvidia_gpu() is None


def test_environment_pins_match_the_projects():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    env = [ln for ln in envsetup.REQUIREMENTS.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(env) >= 15
    for line in env:
        name, version = line.split("==")
        assert pins[name.lower().replace("_", "-")] == version, line


def test_a_cancelled_setup_leaves_no_ready_marker_and_resumes(tmp_path):
    setup = envsetup.EnvSetup(tmp_path / "env", envsetup.TorchChoice("cpu", "CPU (test)", "torch==2.13.0"), tool="pip")
    deadline = time.monotonic() + 120
    while not setup.message.startswith("installing torch"):
        assert setup.step() and time.monotonic() < deadline
        time.sleep(0.05)
    proc = setup._proc
    setup.cancel()
    assert proc.poll() is not None and not setup.step()
    assert envsetup.env_status(tmp_path / "env") == {"present": False, "in_sync": False}
    assert "cancelled" in (tmp_path / "env/setup.log").read_text()
    again = envsetup.EnvSetup(tmp_path / "env", envsetup.TorchChoice("cpu", "CPU (test)", "torch==2.13.0"), tool="pip")
    assert again.plan()[0].name.startswith("installing torch")  # the environment exists: it resumes, not restarts
    with pytest.raises(envsetup.EnvSetupError, match="not made by Set Up Backend"):
        envsetup.remove_env(tmp_path)
    assert envsetup.remove_env(tmp_path / "env") and not (tmp_path / "env").exists()


def test_doctor_reports_torch_device_and_models():
    r = subprocess.run([sys.executable, "-m", "backend", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["torch"].startswith("2.") and d["device"] == "cpu" and d["models"]["relight_text"] == {
        k: False for k in ("seva-1.1", "seva-vae", "seva-clip", "ic-light-fc", "ic-light-base")
    }
