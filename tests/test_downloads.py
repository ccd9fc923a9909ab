"""Model downloads with progress (issue 15), against a stand-in hub on loopback (tests/fakehub.py): the
CLI the add-on runs in the backend environment, the token passed only through the environment,
gated models explained, only the files a model needs, the cache check without huggingface_hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakehub import FakeHub

from backend import model_needs
from backend.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def _cli(hub, cache, *keys, token=None, offline="0"):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": offline, "HOME": str(cache.parent)}  # fmt: skip
    if token:
        env["HF_TOKEN"] = token
    r = subprocess.run([sys.executable, "-m", "backend", "models", "download", *keys], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stderr


def test_a_gated_model_downloads_with_progress_once_its_token_is_given(tmp_path, monkeypatch):
    seva = MODELS["seva-1.1"]
    weights = os.urandom(6 << 20)
    hub = FakeHub({seva.repo: {seva.filename: weights, "model.safetensors": b"v1.0", "README.md": b"x"}}, gated=[seva.repo],
                  chunk_delay=0.08)  # fmt: skip
    cache = tmp_path / "hub"
    rc, events, err = _cli(hub, cache, "seva-1.1")
    assert rc == 1 and events[-1]["event"] == "error", err
    assert f"https://huggingface.co/{seva.repo}" in events[-1]["message"] and "Hugging Face Token" in events[-1]["message"]
    rc, events, err = _cli(hub, cache, "seva-1.1", token="hf_test_token")
    assert rc == 0, err
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and "progress" in kinds
    assert events[0]["files"] == 1 and events[0]["total"] == len(weights) and events[0]["gated"]
    steps = [e["bytes"] for e in events if e["event"] == "progress"]
    assert steps == sorted(steps) and all(e["rate"] >= 0 for e in events if e["event"] == "progress")
    assert "Bearer hf_test_token" in hub.auth  # the token reached the hub through the backend process only
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert model_needs._cached_file(seva.repo, seva.filename) is not None  # the stdlib reader Blender uses
    assert (Path(events[-1]["path"]) / seva.filename).read_bytes() == weights


def test_a_pipeline_downloads_only_the_files_it_needs(tmp_path):
    sd = MODELS["sd15"]
    files = {"model_index.json": b"{}", "unet/config.json": b"{}", "unet/diffusion_pytorch_model.safetensors": b"u" * 1000,
             "unet/diffusion_pytorch_model.fp16.safetensors": b"h" * 500, "v1-5-pruned-emaonly.ckpt": b"c" * 2000,
             "text_encoder/model.safetensors": b"t" * 300, "tokenizer/vocab.json": b"{}",
             "unet/diffusion_pytorch_model.bin": b"b"}  # fmt: skip
    hub = FakeHub({sd.repo: files})
    rc, events, err = _cli(hub, tmp_path / "hub", "sd15")
    assert rc == 0, err
    assert events[0]["files"] == 5 and events[0]["total"] == 2 + 2 + 1000 + 300 + 2
    snap = Path(events[-1]["path"])
    assert (snap / "unet/diffusion_pytorch_model.safetensors").exists() and not (snap / "v1-5-pruned-emaonly.ckpt").exists()


@pytest.mark.parametrize("args, words", [(("flux-tiny",), "tiny random model"), (("nope",), "unknown model 'nope'")])
def test_what_cannot_be_downloaded_is_explained(tmp_path, args, words):
    rc, events, _ = _cli(FakeHub({}), tmp_path / "hub", *args)
    assert rc == 1 and words in events[-1]["message"]


def test_offline_refuses_to_download(tmp_path):
    rc, events, _ = _cli(FakeHub({}), tmp_path / "hub", "seva-1.1", offline="1")
    assert rc == 1 and "Offline" in events[-1]["message"]


def test_sizes_are_asked_of_the_hub(tmp_path):
    sd, seva = MODELS["sd15"], MODELS["seva-1.1"]
    hub = FakeHub({sd.repo: {"model_index.json": b"{}", "unet/diffusion_pytorch_model.safetensors": b"u" * 1000, "x.ckpt": b"c" * 99},
                   seva.repo: {seva.filename: b"s" * 4321}})  # fmt: skip
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HOME": str(tmp_path)}  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "backend", "models", "sizes", "sd15", "seva-1.1", "wan-1.3b"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    got = json.loads(r.stdout)
    assert got["sd15"] == 1002 and got["seva-1.1"] == 4321 and "not found" in got["wan-1.3b"]
