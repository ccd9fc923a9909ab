"""The README's main-job command, end to end (the toy models: no real weights in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def test_relight_turntable_demo(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache: the toy path
    r = subprocess.run(
        [sys.executable, "demo/relight_turntable.py", "--out", str(out), "--views", "8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "TOY MODELS" in r.stdout and "consistency" in r.stdout and "PSNR to the Cycles ground truth" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["real_weights"] is False and report["toy_models"] is True and report["views"] == 8
    assert any("TOY" in label for label in report["labels"])
    assert set(report["write_back"]["textures"]) == {"Sphere.0", "Box.1", "Cylinder.2", "Torus.3"}
    for kind in ("coupled", "independent"):
        assert 0 <= report["consistency"][kind]["mean"] < 1 and len(report["consistency"][kind]["per_view"]) == 8
        assert 5 < report["psnr_to_ground_truth"][kind] < 60
    assert 5 < report["psnr_to_ground_truth"]["no edit"] < 60 and "(the inputs unedited: " in r.stdout
    assert len(list((out / "ground_truth").glob("*.png"))) == 8  # Cycles under the prompt's light
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width >= 8 * 128 and sheet.height >= 5 * 128  # inputs, independent, coupled, ground truth, heat map
    assert (out / "relit_turntable.blend").stat().st_size > 100_000
    # a prompt outside the toy vocabulary is refused before anything is rendered
    r3 = subprocess.run(
        [sys.executable, "demo/relight_turntable.py", "--out", str(tmp_path / "beach"), "--prompt", "beach sunset lighting"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r3.returncode == 2 and "<colour> light from the <direction>" in r3.stderr
    assert not (tmp_path / "beach").exists()
    # rerunning over a previous demo replaces it; anything else is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    r2 = subprocess.run(
        [sys.executable, "demo/relight_turntable.py", "--out", str(tmp_path / "other")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r2.returncode == 2 and (tmp_path / "other" / "keep.txt").exists()
