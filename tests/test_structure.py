"""The backend's seams (issue 14, "structure"): the model cache apart from the runner, models freed
after in-process jobs, one editor interface with one guidance rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.jobs import JobFolder, parse_spec
from backend.model_cache import ModelCache
from backend.runner import run_job

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_do_not_import_the_runner():
    code = "import sys, backend.tasks; assert 'backend.runner' not in sys.modules, sorted(m for m in sys.modules if 'backend' in m)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _job(tmp_path, name):
    spec = {"task": "couple_images", "edit": {"prompts": ["a", "b"]}, "models": {"generator": "flux-tiny"}, "sampling": {"steps": 1},
            "output": {"width": 32, "height": 32}}  # fmt: skip
    return JobFolder.create(tmp_path / name, parse_spec(spec))


def test_in_process_jobs_release_their_models_and_server_jobs_keep_them(tmp_path, monkeypatch):
    cleared = []
    real_clear = ModelCache.clear
    monkeypatch.setattr(ModelCache, "clear", lambda self: (cleared.append(len(self._models)), real_clear(self))[1])
    assert run_job(_job(tmp_path, "a")).status == "done"
    assert cleared == [1]  # the job's generator was loaded, then freed when the job ended
    warm = ModelCache()
    assert run_job(_job(tmp_path, "b"), cache=warm).status == "done"
    assert cleared == [1] and len(warm._models) == 1  # the server's cache keeps it for the next job


def _tiny_editors():
    from backend.models.editors.controlnet import load_controlnet_editor
    from backend.models.editors.ic_light import load_ic_light
    from backend.models.editors.magic_fixup import tiny_magic_fixup
    from backend.models.editors.neural_gaffer import load_neural_gaffer

    return {
        "ic_light": load_ic_light("fc", base="tiny", device="cpu"),
        "controlnet": load_controlnet_editor(["depth"], base="tiny", device="cpu"),
        "neural_gaffer": load_neural_gaffer("tiny", device="cpu"),
        "magic_fixup": tiny_magic_fixup(),
    }


def test_every_editor_meets_the_editor_interface():
    from backend.models.editors import Editor

    for name, ed in _tiny_editors().items():
        assert isinstance(ed, Editor), name
        assert isinstance(ed.describe(), dict) and isinstance(ed.labels, list), name


@pytest.mark.parametrize("cfg, batch", [(0.5, 1), (1.0, 1), (2.0, 2)])
def test_one_guidance_rule_runs_the_unconditional_half_only_above_1(cfg, batch):
    """IC-Light once guided at cfg < 1 (a doubled batch for a weaker-than-nothing guidance); every editor
    now follows diffusers' rule."""
    from backend.models.editors.ic_light import load_ic_light

    ic = load_ic_light("fc", base="tiny", device="cpu")
    rgba = np.zeros((64, 64, 4))
    rgba[16:48, 16:48] = [200, 100, 50, 255]
    conds = ic.view_conditions([rgba], [{}])
    seen = []
    ic.pipe.unet.register_forward_hook(lambda m, a, kw_out=None, *rest: seen.append(a[0].shape[0]))
    p = ic.participant("e", conds, "light", steps=1, cfg=cfg, seeds=0)
    p.denoiser(torch.zeros(p.shape), float(p.sigmas[0]))
    assert seen == [batch]
