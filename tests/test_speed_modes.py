"""A job's speed mode (``models.speed``, backend/models/speed.py) run through the job runner.

Speed itself is measured on a GPU (bench/speed_modes.py, docs/performance.md); here: each mode runs
the real job, says in the job's log what it did, and changes results only as much as it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.jobs import JobFolder, JobSpecError, parse_spec
from backend.models.speed import resolve
from backend.runner import run_job

ROOT = Path(__file__).resolve().parents[1]


def toy_relight(tmp_path: Path, name: str, speed: str) -> tuple[JobFolder, object]:
    from backend.toyworld.evaluate import job_views, make_scene

    sc = make_scene(0)
    views, files = job_views(sc)
    spec = {
        "task": "relight_text",
        "views": views[:4],
        "edit": {"prompt": sc.prompt},
        "models": {"multiview": "seva-toy", "editor": "ic-light-toy", "speed": speed},
        "sampling": {"steps": 4, "lam": 0.015},
        "multiview": {"window": 8, "size": 128},
    }
    job = JobFolder.create(tmp_path / name, parse_spec(spec), {k: v for k, v in files.items() if k in {v["image"] for v in views[:4]}})
    return job, run_job(job)


def images(job: JobFolder, res) -> np.ndarray:
    return np.stack([np.asarray(Image.open(job.root / o.path).convert("RGB"), np.float32) / 255 for o in res.outputs if o.view])


def test_fp8_mode_runs_the_toy_edit_on_fp8_layers_and_stays_close_to_eager(tmp_path):
    eager_job, eager = toy_relight(tmp_path, "eager", "eager")
    fp8_job, fp8 = toy_relight(tmp_path, "fp8", "fp8")
    assert eager.status == fp8.status == "done", (eager.error, fp8.error)
    log = (fp8_job.root / "log").read_text()
    for name in ("seva-toy: speed mode fp8", "ic-light-toy-unet: speed mode fp8"):
        line = next(ln for ln in log.splitlines() if name in ln)
        assert int(line.split("; ")[1].split()[0]) > 0, line  # "<n> linear layers in fp8"
    assert "speed mode" not in (eager_job.root / "log").read_text()
    a, b = images(eager_job, eager), images(fp8_job, fp8)
    diff = np.abs(a - b).mean()
    assert 1e-4 < diff < 0.05, diff  # e4m3 rounding moves pixels, it does not wreck the edit


def test_auto_is_eager_until_a_faster_mode_is_measured_safe_and_bad_modes_are_refused():
    assert resolve("auto", "cuda") == resolve("auto", "cpu") == "eager"
    with pytest.raises(ValueError, match="choose one of"):
        resolve("turbo", "cpu")
    with pytest.raises(JobSpecError, match="models.speed"):
        parse_spec({"task": "novel_views", "views": [], "models": {"speed": "turbo"}})


COMPILED_JOB = """
import json, sys
from pathlib import Path
from backend.jobs import JobFolder, parse_spec
from backend.runner import run_job
from backend.models.seva.cameras import orbit
import numpy as np, torch
from PIL import Image
root = Path(sys.argv[1])
c2w = orbit(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -4], [0, 0, 0, 1]]), torch.zeros(3), torch.tensor([0.0, -1, 0]), 3)
K = [[64.0, 0, 32], [0, 64, 32], [0, 0, 1]]
views = [{"name": f"c{i}", "width": 64, "height": 64, "K": K, "c2w": c2w[i].tolist()} for i in range(3)]
views[0]["image"] = "a.png"
buf = __import__("io").BytesIO()
Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="PNG")
spec = {"task": "novel_views", "views": views, "models": {"multiview": "seva-tiny", "speed": "compile"},
        "sampling": {"steps": 2}, "multiview": {"window": 3, "size": 64}}
job = JobFolder.create(root, parse_spec(spec), {"a.png": buf.getvalue()})
res = run_job(job)
print(json.dumps({"status": res.status, "error": res.error, "log": (root / "log").read_text()}))
"""


def test_compile_mode_compiles_once_per_machine(tmp_path):
    """The first process compiles and saves the artefacts after its job; a second one loads them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COUPLED_EDIT_CACHE": str(tmp_path / "cache")}

    def job(name: str) -> dict:
        inductor = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{name}")}  # only the saved file can be shared
        r = subprocess.run([sys.executable, "-c", COMPILED_JOB, str(tmp_path / name)], env=env | inductor, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["status"] == "done", out["error"]
        return out

    first = job("first")
    assert "seva-tiny: speed mode compile; compiling for this machine" in first["log"]
    assert "compiled artefacts saved for the next process" in first["log"]
    saved = next((tmp_path / "cache").rglob("*.bin"))
    assert saved.name == "models-compile.bin"  # one file per mode
    size = saved.stat().st_size
    second = job("second")
    assert "seva-tiny: speed mode compile; compiled artefacts loaded (" in second["log"]
    # the second process saves again after its job: what it loaded must still be in the file (torch keeps
    # loaded artefacts in later saves), or a third process would compile again
    assert saved.stat().st_size >= size
