"""``python -m backend``: every subcommand listed here works end to end.

couple-images / couple-videos build a JobSpec, lay out a job folder at --out and run it through
the same ``run_job`` the add-on and the server use, so the folder can be inspected or rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from . import __version__
from .jobs import JobFolder, JobSpecError, dump_schema, parse_spec
from .naming import view_stem
from .registry import MODELS

TINY = {"couple_images": "flux-tiny", "couple_videos": "wan-tiny"}


def _models_of(kinds: tuple[str, ...]) -> list[str]:
    return sorted(k for k, e in MODELS.items() if e.kind in kinds) + ["tiny"]


def _common(p: argparse.ArgumentParser, kinds: tuple[str, ...], default_model: str) -> None:
    p.add_argument("--prompt", action="append", required=True, help="one per sample; give it 2+ times")
    p.add_argument("--model", default=default_model, choices=_models_of(kinds), help="registry key; 'tiny' = tiny random model, no weights")
    p.add_argument("--model-path", default=None, help="local folder (diffusers layout) with that model's weights")
    p.add_argument("--lam", type=float, default=None, help="coupling strength (0 = independent samples; default 0.3)")
    p.add_argument("--seed", type=int, action="append", default=None, help="one per prompt, or one base seed")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (Flux dev: distilled guidance)")
    p.add_argument("--negative-prompt", default="")
    if "flux" in kinds:
        p.add_argument("--true-cfg", type=float, default=1.0, help="Flux: real CFG scale with --negative-prompt (> 1 doubles the cost)")
    p.add_argument("--chain", action="store_true", help="couple prompts 0-1, 1-2, ... instead of all pairs")
    p.add_argument("--step", choices=["euler", "ddpm"], default=None, help="sampler step (default: Euler for flow models)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--offload", choices=["none", "model", "sequential"], default="none", help="CPU offload (CUDA): model or sequential")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--compare", action="store_true", help="also run lam = 0 with the same seeds, into OUT/uncoupled")
    p.add_argument("--out", required=True, help="job folder to create (refuses to overwrite unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous job at --out")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backend", description=f"Coupled Edit backend {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    ci = sub.add_parser("couple-images", help="N prompts of Flux / an SD model, sampled coupled (aligned)")
    _common(ci, ("flux", "sd"), "flux-schnell")
    cv = sub.add_parser("couple-videos", help="prompts of Wan 2.1, sampled coupled (aligned videos)")
    _common(cv, ("wan",), "wan-1.3b")
    cv.add_argument("--frames", type=int, default=None, help="4k+1 frames")
    cv.add_argument("--fps", type=int, default=16)
    nv = sub.add_parser("novel-views", help="SEVA: images with cameras + target cameras -> an image per target")
    nv.add_argument("--images", nargs="+", required=True, help="input images, in the order of --cameras")
    nv.add_argument(
        "--cameras", required=True, help="JSON: a list (or {'views': [...]}) of {c2w 4x4 OpenCV, K 3x3 pixels, width, height, name?}"
    )
    nv.add_argument("--targets", required=True, help="JSON: target cameras, same format")
    nv.add_argument("--model", default="seva-1.1", choices=sorted(k for k, e in MODELS.items() if e.kind == "seva") + ["tiny"])
    nv.add_argument("--model-path", default=None, help="local SEVA .safetensors file or folder")
    nv.add_argument("--steps", type=int, default=50)
    nv.add_argument("--cfg", type=float, default=2.0)
    nv.add_argument("--cfg-min", type=float, default=1.2)
    nv.add_argument("--guider", type=int, choices=[0, 1, 2], default=1)
    nv.add_argument("--camera-scale", type=float, default=2.0)
    nv.add_argument("--window", type=int, default=21, help="frames per SEVA call (T)")
    nv.add_argument("--passes", type=int, choices=[1, 2], default=1, help="2: anchors first, then interpolation (orbits)")
    nv.add_argument("--size", type=int, default=576, help="working short side")
    nv.add_argument("--seed", type=int, default=23)
    nv.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    nv.add_argument("--device", default="auto")
    nv.add_argument("--out", required=True)
    nv.add_argument("--overwrite", action="store_true")
    rj = sub.add_parser("run-job", help="run a job folder (job.json + inputs/) and write outputs/ + result.json")
    rj.add_argument("job_dir")
    vj = sub.add_parser("validate-job", help="check a job.json (or job folder) and print what is wrong")
    vj.add_argument("path")
    ml = sub.add_parser("models", help="the models each task needs, and which are in the local cache")
    ml.add_argument("action", choices=["list", "download", "sizes"])
    ml.add_argument("keys", nargs="*", help="download: registry keys (JSON progress lines on stdout; HF_TOKEN for gated models)")
    ml.add_argument("--task", default=None, help="only this task's models")
    sub.add_parser("doctor", help="JSON: torch, device, free GPU memory, models present per task (Check Backend asks this)")
    ev = sub.add_parser("eval-toy", help="measure coupled vs independent editing with the toy models on held-out toy scenes")
    ev.add_argument("--scenes", type=int, default=24)
    ev.add_argument("--lams", default="0,0.005,0.015,0.05,0.1", help="comma-separated coupling strengths")
    ev.add_argument("--steps", type=int, default=25)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--out", default="outputs/eval_toy", help="eval_toy.json, table.md, examples.png, lam_sweep.png")
    sc = sub.add_parser("schema", help="write the JobSpec JSON schema")
    sc.add_argument("--out", default="-", help="file, or - for stdout")
    sc.add_argument("--openapi", action="store_true", help="the server's OpenAPI document instead")
    sv = sub.add_parser("serve", help="HTTP server: jobs from the add-on or other machines, one GPU worker")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback needs --token")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--jobs-dir", default="server_jobs", help="where jobs are kept (survives restarts)")
    sv.add_argument("--token", default=None, help="required on every route but /health (or set COUPLED_EDIT_TOKEN)")
    sv.add_argument("--new-token", action="store_true", help="make a strong random token, print it once and serve with it")
    sv.add_argument("--max-queue", type=int, default=32, help="jobs waiting at most; more are refused with 429")
    sv.add_argument("--max-request-mb", type=int, default=2048, help="largest submission in MiB")
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    sv.add_argument("--ray", metavar="ADDRESS", default=None, help="jobs on Ray: ADDRESS, auto or local (docs/cluster.md)")
    sv.add_argument("--ray-actors", type=int, default=None, help="actors to start (default: one per GPU, or per node without GPUs)")
    sv.add_argument("--ray-retries", type=int, default=1, help="times a job lost with its actor is run again before it ends interrupted")
    rb = sub.add_parser("ray-batch", help="run a folder of job folders on a Ray cluster, with progress and a summary")
    rb.add_argument("jobs_dir", help="a folder of job folders (job.json + inputs/ each); finished ones are skipped")
    rb.add_argument("--ray", metavar="ADDRESS", default="auto", help="the cluster's address, auto (the running one) or local")
    rb.add_argument("--actors", type=int, default=None, help="actors to start (default: one per GPU, or per node without GPUs)")
    rb.add_argument("--retries", type=int, default=1)
    rb.add_argument("--rerun", action="store_true", help="run finished jobs again too (their old results are replaced)")
    return ap


def _spec_from_args(a: argparse.Namespace, task: str) -> dict:
    seeds = a.seed or [0]
    if len(seeds) == 1 and len(a.prompt) > 1:
        seeds = [seeds[0] + i for i in range(len(a.prompt))]
    model = TINY[task] if a.model == "tiny" else a.model
    spec = {
        "task": task,
        "edit": {"prompts": a.prompt, "seeds": seeds, "negative_prompt": a.negative_prompt, "chain": a.chain},
        "sampling": {"lam": a.lam, "steps": a.steps, "cfg_editor": a.guidance, "step": a.step, "true_cfg": getattr(a, "true_cfg", 1.0)},
        "models": {
            "generator": model,
            "source": a.model_path,
            "dtype": a.dtype,
            "device": a.device,
            "offload": a.offload,
            "vae_tiling": a.vae_tiling,
        },
        "output": {"width": a.width, "height": a.height},
    }
    if task == "couple_videos":
        spec["output"].update(frames=a.frames, fps=a.fps)
    return spec


def _read_cameras(path: str) -> list[dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["views"] if isinstance(data, dict) else data


def _novel_views(a: argparse.Namespace) -> int:
    from PIL import Image

    out = Path(a.out)
    _prepare_out(out, a.overwrite)
    cams, tgts = _read_cameras(a.cameras), _read_cameras(a.targets)
    if len(cams) != len(a.images):
        raise SystemExit(f"error: {len(a.images)} images but {len(cams)} cameras in {a.cameras}; give one camera per image, in order")
    views, files = [], {}
    for i, (img, cam) in enumerate(zip(a.images, cams, strict=True)):
        w, h = Image.open(img).size
        name = cam.get("name") or f"input_{i:03d}"
        fname = f"{view_stem(i, name)}{Path(img).suffix.lower()}"
        files[fname] = img
        views.append(
            {"name": name, "width": cam.get("width", w), "height": cam.get("height", h), "K": cam["K"], "c2w": cam["c2w"], "image": fname}
        )
    for i, cam in enumerate(tgts):
        views.append(
            {"name": cam.get("name") or f"target_{i:03d}", "width": cam["width"], "height": cam["height"], "K": cam["K"], "c2w": cam["c2w"]}
        )
    spec = {
        "task": "novel_views",
        "views": views,
        "sampling": {"steps": a.steps, "cfg_multiview": a.cfg, "seed": a.seed},
        "models": {
            "multiview": "seva-tiny" if a.model == "tiny" else a.model,
            "source": a.model_path,
            "dtype": a.dtype,
            "device": a.device,
        },
        "multiview": {
            "window": a.window,
            "guider": a.guider,
            "cfg_min": a.cfg_min,
            "camera_scale": a.camera_scale,
            "passes": a.passes,
            "size": a.size,
        },
    }
    return _run(spec, out, files)


def _progress_printer():
    from tqdm import tqdm

    bar = {"bar": None}

    def on_event(ev) -> None:
        if ev.stage == "sampling":
            if bar["bar"] is None:
                bar["bar"] = tqdm(total=ev.total, desc="sampling", unit="step", file=sys.stderr)
            bar["bar"].update(ev.step - bar["bar"].n)
        else:
            if bar["bar"] is not None:
                bar["bar"].close()
                bar["bar"] = None
            if ev.stage in ("loading", "writing"):
                print(f"{ev.stage}{': ' + ev.message if ev.message else ''}", file=sys.stderr)

    return on_event


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"error: {out} is not empty; choose another --out or pass --overwrite to replace it")
        if not (out / "job.json").exists():
            raise SystemExit(f"error: {out} is not a job folder; refusing to delete it")
        shutil.rmtree(out)


def _run(spec_dict: dict, out: Path, files: dict | None = None) -> int:
    from .runner import run_job

    spec = parse_spec(spec_dict)
    job = JobFolder.create(out, spec, files)
    result = run_job(job, progress=_progress_printer())
    if result.status != "done":
        print(f"job {result.status}: {result.error}", file=sys.stderr)
        return 1
    meta = result.metadata
    where = meta.get("sources") or f"{meta.get('source')}, {meta.get('dtype')}"
    print(f"model: {meta.get('model')} ({where})")
    for label in meta.get("labels", []):
        print(f"NOTE: {label}")
    if "request" in meta:
        print(f"lam: {meta['request']['lam']}  seeds: {meta['request']['seeds']}  steps: {meta.get('steps')}")
        print(f"sampling took {meta['timings_s']['sample']:.2f} s")
        dist = ", ".join(f"{k}: {v:.3f}" for k, v in meta.get("latent_rms_distance", {}).items())
        print(f"latent RMS distance between samples: {dist}")
    else:
        print(
            f"{len(meta['targets'])} targets from {len(meta['inputs'])} inputs, plan {meta['plan']}, {meta['network_calls']} network calls"
        )
        print(f"took {meta['timings_s']['total']:.2f} s (sampling {meta['timings_s']['sampling']:.2f} s)")
    for o in result.outputs:
        print(f"wrote {out / o.path}")
    return 0


def _couple(a: argparse.Namespace, task: str) -> int:
    out = Path(a.out)
    _prepare_out(out, a.overwrite)
    rc = _run(_spec_from_args(a, task), out)
    if rc == 0 and a.compare:
        spec = _spec_from_args(a, task)
        spec["sampling"]["lam"] = 0.0
        print("--- uncoupled (lam = 0), same seeds ---")
        rc = _run(spec, out / "uncoupled")
    return rc


def _models_list(task: str | None) -> int:
    from .models.weights import in_cache
    from .registry import TASK_MODELS

    tasks = [task] if task else list(TASK_MODELS)
    if task and task not in TASK_MODELS:
        raise SystemExit(f"error: unknown task {task!r}; choose from {', '.join(TASK_MODELS)}")
    missing = set()
    for t in tasks:
        print(f"{t}:")
        for key in TASK_MODELS[t]:
            e = MODELS[key]
            here = in_cache(e)
            missing |= set() if here else {key}
            extra = f"  [{e.licence}{', gated' if e.gated else ''}]" if e.licence else ""
            print(f"  {'present' if here else 'missing':8s} {key:14s} {e.repo}{'/' + e.filename if e.filename else ''}{extra}")
    if not task or task == "relight_text":
        print("toy models (shipped with the code, trained on the project's toy world; relight_text with multiview seva-toy,")
        print("editor ic-light-toy; docs/evidence.md):")
        for key in sorted(k for k, e in MODELS.items() if e.toy):
            print(f"  {'present' if in_cache(MODELS[key]) else 'missing':8s} {key:14s} {MODELS[key].notes}")
    if missing:
        print("\nmissing models download once where the hub is reachable: `hf download <repo>` (gated ones: accept the licence")
        print("on the model page and log in first); the cache is HF_HOME. `--model tiny` runs without any weights.")
    return 0


def doctor() -> dict:
    """What this Python can run: torch, the device, free GPU memory, which task's models are in the cache."""
    import platform

    import torch

    from .model_needs import in_cache
    from .registry import TASK_MODELS

    out = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu", "device_name": platform.processor() or "CPU",
           "free_vram_gb": None}  # fmt: skip
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out |= {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "free_vram_gb": free / 2**30, "vram_gb": total / 2**30}
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out |= {"device": "mps", "device_name": "Apple GPU (Metal)"}
    out["models"] = {task: {k: in_cache(MODELS[k]) for k in keys} for task, keys in TASK_MODELS.items()}
    return out


MIN_TOKEN_CHARS = 22  # 16 random bytes in URL-safe base64


def token_problem(token: str) -> str | None:
    """Why a token is too weak to guard a server on the network, or None."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"it has {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones (16 random bytes)"
    if len(set(token)) < 8:
        return "it repeats too few characters to be random"
    return None


def _serve(a: argparse.Namespace) -> int:
    import ipaddress
    import logging
    import os
    import secrets

    token = a.token or os.environ.get("COUPLED_EDIT_TOKEN") or None
    if a.new_token:
        token = secrets.token_urlsafe(32)
        print(f"token: {token}", flush=True)
    try:
        loopback = a.host == "localhost" or ipaddress.ip_address(a.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise CliError(
            f"refusing to listen on {a.host} without a token: anyone on the network could run jobs. "
            "Add --new-token (prints a strong one), give --token (or set COUPLED_EDIT_TOKEN), or bind to 127.0.0.1"
        )
    if not loopback and (weak := token_problem(token)):
        raise CliError(f"refusing to listen on {a.host} with a weak token: {weak}. `--new-token` makes a strong one")
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .server.app import Limits, create_app

    limits = Limits(max_queue=a.max_queue, max_request_bytes=a.max_request_mb << 20)
    ray = None
    if a.ray:
        from .server.app import RayOptions

        ray = RayOptions(a.ray, a.ray_actors, a.ray_retries)
    app = create_app(a.jobs_dir, token=token, limits=limits, ray=ray)
    where = f", jobs on the Ray cluster at {a.ray}" if a.ray else ""
    print(f"Coupled Edit backend {__version__} on http://{a.host}:{a.port} (jobs in {Path(a.jobs_dir).resolve()}{where})", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, timeout_graceful_shutdown=5)
    return 0


class CliError(Exception):
    """A problem with what was asked; printed as one line, exit status 2."""


def read_job_text(path: Path) -> str:
    """The text of a job.json (or of a job folder's), with one clear line for every way it can be missing."""
    target = path / "job.json" if path.is_dir() else path
    if not path.exists():
        raise CliError(f"{path} does not exist: give a job folder (holding job.json) or a job.json file")
    if not target.exists():
        raise CliError(f"{path} holds no job.json: give a job folder made by the add-on, export_rig or a couple-* command")
    if target.is_dir():
        raise CliError(f"{target} is a folder, not a file: a job.json must be a JSON file")
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{target} is not UTF-8 text (byte {e.start}): save the job spec as UTF-8 JSON") from None
    except OSError as e:
        raise CliError(f"cannot read {target}: {e.strerror}") from None


def _eval_toy(a: argparse.Namespace) -> int:
    from .toyworld.evaluate import EvalSettings, evaluate, table

    try:
        lams = tuple(float(x) for x in a.lams.split(","))
    except ValueError:
        raise CliError(f"--lams takes comma-separated numbers, e.g. 0,0.015,0.1; got {a.lams!r}") from None
    if a.scenes < 1 or a.steps < 1:
        raise CliError("--scenes and --steps must be at least 1")
    from .models.weights import ModelUnavailable

    settings = EvalSettings(scenes=a.scenes, lams=lams, steps=a.steps, device=a.device)
    try:
        res = evaluate(settings, log=lambda m: print(m, file=sys.stderr), out=Path(a.out))
    except ModelUnavailable as e:  # e.g. backend/toy_models missing from an install
        raise CliError(str(e)) from None
    print(table(res))
    print(f"wrote {a.out}/eval_toy.json, table.md, examples.png, lam_sweep.png ({res.timings_s['total']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.command == "couple-images":
            return _couple(a, "couple_images")
        if a.command == "couple-videos":
            return _couple(a, "couple_videos")
        if a.command == "novel-views":
            return _novel_views(a)
        if a.command == "run-job":
            from .runner import run_job

            folder = Path(a.job_dir)
            if folder.is_file() and folder.name == "job.json":
                folder = folder.parent
            parse_spec(read_job_text(folder))  # refuse a missing or broken job before writing anything
            result = run_job(JobFolder(folder), progress=_progress_printer())
            print(json.dumps(result.model_dump(), indent=2))
            return 0 if result.status == "done" else 1
        if a.command == "validate-job":
            spec = parse_spec(read_job_text(Path(a.path)))
            print(f"ok: task {spec.task}, {len(spec.views)} views")
            return 0
        if a.command == "models" and a.action == "sizes":
            import os

            from .downloads import sizes
            from .registry import TASK_MODELS

            keys = a.keys or sorted({k for ks in TASK_MODELS.values() for k in ks})
            print(json.dumps(sizes(keys, os.environ.get("HF_TOKEN") or None)))
            return 0
        if a.command == "models" and a.action == "download":
            from .downloads import main as download_main

            if not a.keys:
                raise CliError("name the models to download, e.g. `python -m backend models download seva-1.1`")
            return download_main(a.keys)
        if a.command == "models":
            return _models_list(a.task)
        if a.command == "eval-toy":
            return _eval_toy(a)
        if a.command == "doctor":
            print(json.dumps(doctor()))
            return 0
        if a.command == "schema":
            if a.openapi:
                from .jobs import atomic_write_text
                from .server.app import openapi_schema

                text = json.dumps(openapi_schema(), indent=2) + "\n"
                print(text, end="") if a.out == "-" else atomic_write_text(Path(a.out), text)
            elif a.out == "-":
                from .jobs import json_schema

                print(json.dumps(json_schema(), indent=2))
            else:
                dump_schema(a.out)
            return 0
        if a.command == "serve":
            return _serve(a)
        if a.command == "ray-batch":
            from .cluster.batch import run_batch

            try:
                return run_batch(Path(a.jobs_dir), a.ray, a.actors, a.retries, a.rerun)
            except (ConnectionError, FileNotFoundError) as e:
                raise CliError(str(e)) from None
    except (JobSpecError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1
