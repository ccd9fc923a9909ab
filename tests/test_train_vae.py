"""train/train_vae.py --decoder-only: the decoder learns, the latent space the editor and SEVA were
trained in (encoder, quant conv, scaling factor) stays bit for bit."""

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "backend" / "toy_models" / "vae-toy"


def test_decoder_only_keeps_the_latent_space(tmp_path):
    cmd = [sys.executable, "train/train_vae.py", "--init", str(SHIPPED), "--decoder-only", "--cache", "8", "--batch", "2",
           "--max-steps", "4", "--lr", "1e-3", "--device", "cpu", "--out", str(tmp_path), "--note", "test run"]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cached 8 views" in r.stdout
    old = load_file(SHIPPED / "diffusion_pytorch_model.safetensors")
    new = load_file(tmp_path / "vae-toy" / "diffusion_pytorch_model.safetensors")
    assert old.keys() == new.keys()
    frozen = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in old if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and trained and len(frozen) + len(trained) == len(old)
    assert all(old[k].equal(new[k]) for k in frozen)
    assert any(not old[k].equal(new[k]) for k in trained)
    config = lambda p: json.loads((p / "config.json").read_text())  # noqa: E731
    assert config(tmp_path / "vae-toy")["scaling_factor"] == config(SHIPPED)["scaling_factor"]
    assert "test run" in (tmp_path / "vae-toy" / "model_card.md").read_text()


def test_decoder_only_needs_a_model_to_continue(tmp_path):
    r = subprocess.run([sys.executable, "train/train_vae.py", "--decoder-only", "--out", str(tmp_path), "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0 and "--init" in r.stderr
