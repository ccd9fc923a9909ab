"""The toy models (#16): shipped with cards, loaded by the real loaders, run by the job runner, and
measured against the toy world's ground truth with bars taken from an evaluation run."""

from __future__ import annotations

import json

from PIL import Image

from backend.registry import MODELS, TOY_DIR, TOY_LABEL

TOY_KEYS = sorted(k for k, e in MODELS.items() if e.toy)


def test_toy_entries_ship_with_model_cards_within_the_size_budget():
    assert TOY_KEYS == ["ic-light-toy", "seva-clip-toy", "seva-toy", "vae-toy"]
    for key in TOY_KEYS:
        e = MODELS[key]
        assert not e.tiny and not e.downloadable and e.bundled_path.is_dir(), key
        assert list(e.bundled_path.rglob("*.safetensors")), key
    for card_dir in ("vae-toy", "seva-toy", "ic-light-toy"):
        card = (TOY_DIR / card_dir / "model_card.md").read_text()
        assert "TOY" in card and "- Training" in card and "Limits:" in card
        info = json.loads((TOY_DIR / card_dir / "training.json").read_text())
        assert info["steps"] > 0 and info["loss_history"]
    total = sum(f.stat().st_size for f in TOY_DIR.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"toy weights {total / 2**20:.1f} MiB exceed the 30 MB budget"


def test_a_toy_job_needs_no_download(monkeypatch, tmp_path):
    from backend.model_needs import job_model_keys, missing_models

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    models = {"multiview": "seva-toy", "editor": "ic-light-toy"}
    assert job_model_keys("relight_text", models) == []
    assert missing_models("relight_text", models) == []


def test_toy_relight_job_runs_through_the_runner_and_is_labelled(tmp_path):
    from backend.jobs import JobFolder, parse_spec
    from backend.runner import run_job
    from backend.toyworld.evaluate import job_views, make_scene

    sc = make_scene(0)
    views, files = job_views(sc, depth=True)
    spec = {
        "task": "relight_text",
        "views": views,
        "edit": {"prompt": sc.prompt},
        "models": {"multiview": "seva-toy", "editor": "ic-light-toy"},
        "sampling": {"steps": 4, "lam": 0.015},
        "multiview": {"window": 21, "size": 576},  # the add-on's defaults: the toy SEVA knows only 8 views at 128 px
    }
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), files)
    res = run_job(job)
    assert res.status == "done", res.error
    meta = json.loads((job.root / "outputs/metadata.json").read_text())
    assert TOY_LABEL in meta["labels"]
    outs = [o for o in res.outputs if o.view]
    assert len(outs) == 8 and all(Image.open(job.root / o.path).size == (128, 128) for o in outs)
    assert "trained on windows of 8 views at 128 px: using window 8, size 128" in (job.root / "log").read_text()
    assert meta["settings"]["T"] == 8 and meta["settings"]["size"] == 128


# Bars measured once with the shipped models on this CPU (docs/evidence.md): eval-toy scenes 0-1, 25
# steps. They sit below what was measured by a margin, so a change that breaks the coupling, the loaders
# or the models fails, while run-to-run float noise does not.
# Measured (session 9: ic-light-toy 12084 steps, seva-toy 8456 steps, 2-core CPU;
# docs/evidence/cpu_eval_toy_s9.json): consistency independent 0.150, coupled lam 0.015 0.1253, lam 0
# 0.1266; PSNR 17.63 / 18.92 / 18.73 dB; SEVA from the ground truth, views 1-7: 17.32 dB (session 8's
# models: 0.155 / 0.1325 / 0.134, PSNR 17.21 / 17.99 / 17.65, 17.16 from the truth; session 7's: 0.136
# coupled, 16.95 dB coupled, 16.0 from the truth); ground truth's consistency 0.025.
BARS = {
    "better_than_independent": 0.018,  # consistency error, independent minus coupled lam 0.015 (measured 0.0249)
    "psnr_coupled": 18.0,  # all 8 views (measured 18.92)
    "psnr_independent": 17.0,  # (measured 17.63)
    "psnr_seva_from_truth": 16.5,  # SEVA alone, views 1-7 (measured 17.32): below 12 its views are noise again
    "psnr_over_no_edit": 1.5,  # both edits above the inputs scored as the answer (measured +2.5 / +3.8 dB)
    "psnr_vae_round_trip": 26.0,  # the ground truth through the toy VAE: every method's ceiling (measured 27.78)
}


def test_eval_toy_quality_bars(tmp_path):
    """`python -m backend eval-toy` end to end on the shipped toy models, against bars measured once."""
    import os
    import subprocess
    import sys

    from backend.registry import TOY_DIR

    root = TOY_DIR.parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "backend", "eval-toy", "--scenes", "2", "--lams", "0,0.015", "--steps", "25", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| coupled lam=0.015 |" in r.stdout and "wrote" in r.stdout
    res = json.loads((tmp_path / "eval_toy.json").read_text())
    s = res["summary"]
    assert res["settings"]["scenes_done"] == 2 and (tmp_path / "examples.png").exists() and (tmp_path / "lam_sweep.png").exists()
    assert res["settings"]["models"]["seva-toy"]["steps"] >= 8456  # which training was measured
    print({k: {m: round(v, 4) for m, v in d.items()} for k, d in s.items()})
    coupled, alone, indep = s["coupled lam=0.015"], s["coupled lam=0"], s["independent"]
    assert indep["consistency"] - coupled["consistency"] > BARS["better_than_independent"], "coupling should make the views agree"
    assert alone["consistency"] < indep["consistency"], "SEVA's own views (lam 0) should agree better than independent edits"
    assert coupled["psnr"] > BARS["psnr_coupled"] and indep["psnr"] > BARS["psnr_independent"]
    # every edit must beat handing the inputs back (15.1 dB on these scenes, consistency 0.026: the
    # inputs are one consistent set under the wrong light)
    assert min(coupled["psnr"], indep["psnr"]) > s["no edit (the inputs)"]["psnr"] + BARS["psnr_over_no_edit"]
    assert s["seva from truth"]["psnr_others"] > BARS["psnr_seva_from_truth"]
    ceiling = s["vae round trip of truth"]
    assert ceiling["psnr"] > BARS["psnr_vae_round_trip"] and ceiling["psnr"] > coupled["psnr"] and ceiling["ssim"] > coupled["ssim"]
    assert s["ground truth"]["consistency"] < 0.03  # the metric's own floor on perfect edits (0.025 on these scenes)


def test_toy_novel_views_job_keeps_the_trained_window_and_is_labelled(tmp_path):
    from backend.jobs import JobFolder, parse_spec
    from backend.runner import run_job
    from backend.toyworld.evaluate import job_views, make_scene

    views, files = job_views(make_scene(1), depth=True)
    for v in views[1:]:
        del v["image"]  # targets: SEVA generates them from view 0
    spec = {
        "task": "novel_views",
        "views": views,
        "models": {"multiview": "seva-toy"},
        "sampling": {"steps": 3},
        "multiview": {"window": 21, "size": 576},
    }
    job = JobFolder.create(tmp_path / "job", parse_spec(spec), {k: v for k, v in files.items() if k == "v0.png" or k.endswith(".npy")})
    res = run_job(job)
    assert res.status == "done", res.error
    assert "trained on windows of 8 views at 128 px: using window 8, size 128" in (job.root / "log").read_text()
    assert len([o for o in res.outputs if o.view]) == 7
    assert TOY_LABEL in json.loads((job.root / "outputs/metadata.json").read_text())["labels"]
