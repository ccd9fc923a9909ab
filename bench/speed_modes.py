"""One table of speed modes for the coupled 21-view edit (IC-Light fc x SEVA), each against bf16 eager.

    python bench/speed_modes.py --out speed.json                      # GPU, random weights at the real shapes
    python bench/speed_modes.py --tiny --device cpu --views 4 --size 64 --steps 3     # plumbing check on a CPU

Every mode runs in a process of its own (a fresh process is what a user's first job sees): a 2-step
warm-up (compiling, when the mode compiles), then the timed edit; the final images are compared with
the reference mode's (relative L2 error). Modes:

- ``eager``: bf16 (fp32 on a CPU), the reference;
- ``compile-cold``: SEVA's network and the editor's UNet ``torch.compile``d, nothing cached;
- ``compile-warm``: the same in a new process with an empty inductor folder, after loading the
  artefacts ``compile-cold`` saved (``backend.compile_cache``): the warm-up a restarted server pays.

Optional (``--modes``, GPU only): ``eager-cudnn-attention`` / ``eager-flash-attention`` (every
scaled-dot-product attention held to one backend), ``compile-graphs`` (``mode="reduce-overhead"``:
CUDA graphs of the compiled networks), ``eager-fp8`` / ``compile-fp8`` (both networks' linear layers
in fp8, ``backend.models.fp8``), ``eager-nobench`` (cuDNN's benchmark mode off: its share of the
warm-up), ``eager-gn`` (every GroupNorm of both networks from two sums and one multiply-add,
``backend.models.sum_group_norm``), ``eager-triton-gn`` (every GroupNorm as one Triton kernel, fused
with the SiLU after it in both networks' resnet blocks, ``backend.models.triton_group_norm``; ``eager-triton-gn-vae``:
the VAEs' norms too),
``eager-channels-last`` (both networks' weights in NHWC, so cuDNN's convolutions need no layout transposes),
``compile-regional-cold`` / ``compile-regional-warm`` (the job mode ``compile-regional``: each repeated
block compiled, blocks of a class sharing code; cold, then a new process loading the saved artefacts), ``eager-profile``
(a 3-step edit under torch.profiler with each network's calls marked,
its table written beside ``--out``), ``eager-streams`` (the editor's UNet on a CUDA stream of its own beside SEVA's network),
and ``fp32`` (everything in fp32, TF32 off): with it in the list every row also reports its error
against fp32, and bf16 eager's own error there is the yardstick a faster mode must stay within.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODES = ("eager", "compile-cold", "compile-warm")
# bench modes that are a job's speed mode: measured through the same code a job runs
JOB_MODES = {"eager-fp8": "fp8", "compile-cold": "compile", "compile-warm": "compile", "compile-fp8": "compile-fp8",
             "compile-regional-cold": "compile-regional", "compile-regional-warm": "compile-regional"}  # fmt: skip


def build_models(tiny: bool, device: torch.device, dtype: torch.dtype):
    from backend.models.editors.ic_light import load_ic_light
    from backend.models.seva.encoders import tiny_seva

    if tiny:
        return tiny_seva(device=device), load_ic_light("fc", base="tiny", dtype="float32", device=str(device))
    from diffusers import AutoencoderKL
    from relight_bench import random_ic_light
    from seva_bench import CLIP_H14, SD21_VAE, build
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from backend.models.seva import SevaConfig, SevaNet
    from backend.models.seva.encoders import ClipConditioner, SevaModel, SevaVAE

    torch.manual_seed(0)
    net = build(lambda: SevaNet(SevaConfig()), device, dtype)
    vae = build(lambda: AutoencoderKL(**SD21_VAE), device, torch.float32)
    clip = build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_H14)), device, dtype)
    return SevaModel(net, SevaVAE(vae), ClipConditioner(clip), ["random weights"], {}), random_ic_light(device, dtype)


def worker(a: argparse.Namespace) -> None:
    """One mode in this process: prints a JSON line, writes the images to ``a.images``."""
    from relight_bench import make_views

    from backend.models.seva.cameras import orbit
    from backend.models.speed import speed_up
    from backend.pipelines.multiview_edit import EditSettings, edit_views

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and a.mode != "fp32" else torch.float32
    no_benchmark = ("eager-nobench", "eager-profile", "eager-triton-gn", "eager-triton-gn-vae", "eager-channels-last")
    torch.backends.cudnn.benchmark = a.mode not in no_benchmark  # jobs never turn it on
    if a.mode == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    seva, editor = build_models(a.tiny, device, dtype)
    caches, loaded = [], 0
    if job_mode := JOB_MODES.get(a.mode):  # what a job with models.speed = job_mode runs (backend.models.speed)
        say = functools.partial(print, file=sys.stderr)
        seva.net, done = speed_up(seva.net, job_mode, "seva", say)
        editor.pipe.unet, _ = speed_up(editor.pipe.unet, job_mode, "editor-unet", say)
        caches, loaded = done.caches, done.loaded_artefacts  # both networks share the mode's one file
    elif a.mode == "eager-gn":  # GroupNorm statistics from plain sums (backend.models.sum_group_norm)
        from backend.models.sum_group_norm import use_sum_group_norm

        print(f"group norms from sums: seva {use_sum_group_norm(seva.net)}, editor {use_sum_group_norm(editor.pipe.unet)}", file=sys.stderr)
    elif a.mode.startswith("eager-triton-gn"):  # one Triton kernel per GroupNorm (+ SiLU) (backend.models.triton_group_norm)
        from backend.models.triton_group_norm import use_triton_group_norm

        done_seva, done_unet = use_triton_group_norm(seva.net), use_triton_group_norm(editor.pipe.unet)
        print(f"triton group norms (of them + SiLU): seva {done_seva}, editor {done_unet}", file=sys.stderr)
        if a.mode == "eager-triton-gn-vae":  # the VAEs' norms too: the old profile's largest GroupNorm share
            done_vaes = use_triton_group_norm(seva.vae.vae), use_triton_group_norm(editor.pipe.vae)
            print(f"triton group norms in the VAEs (seva's, the editor's): {done_vaes}", file=sys.stderr)
    elif a.mode == "eager-channels-last":  # convolution weights NHWC: cuDNN's bf16 kernels run without layout transposes
        seva.net.to(memory_format=torch.channels_last)
        editor.pipe.unet.to(memory_format=torch.channels_last)
    elif a.mode == "compile-graphs":
        seva.net = torch.compile(seva.net, mode="reduce-overhead")
        editor.pipe.unet = torch.compile(editor.pipe.unet, mode="reduce-overhead")
    attention = contextlib.nullcontext
    if a.mode.startswith("eager-") and a.mode.endswith("-attention"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[a.mode.split("-")[1]]
        attention = functools.partial(sdpa_kernel, [backend])
    start = torch.eye(4)
    start[2, 3] = -4
    c2w = orbit(start, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]), a.views).numpy()
    S = a.size
    K = np.array([[S * 1.0, 0, S / 2], [0, S * 1.0, S / 2], [0, 0, 1]])
    views = make_views("iclight", a.views, S, c2w, K)
    s = EditSettings(prompt="beach sunset lighting", steps=a.steps, T=min(21, a.views), size=S, lam=0.015, cfg_editor=2.0,
                     overlap=a.mode == "eager-streams")  # fmt: skip

    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with attention():
            out = fn()
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    _, warm_s, _ = timed(lambda: edit_views(seva, editor, views, 0, EditSettings(**(s.__dict__ | {"steps": 2}))))
    if a.mode == "eager-profile":
        profile_steps(seva, editor, lambda: edit_views(seva, editor, views, 0, EditSettings(**(s.__dict__ | {"steps": 3}))), a.images)
    saved = any(c.save() for c in caches) if a.mode.endswith("-cold") else False
    res, total_s, peak = timed(lambda: edit_views(seva, editor, views, 0, s))
    np.save(a.images, torch.stack(res.images).float().numpy())
    print(json.dumps({"mode": a.mode, "warmup_s": warm_s, "total_s": total_s, "s_per_step": total_s / a.steps, "peak_gib": peak,
                      "artefacts_loaded": loaded, "artefacts_saved": saved}))  # fmt: skip


def profile_steps(seva, editor, run, images: str) -> None:
    """A 3-step edit under torch.profiler, each network's calls marked: the table goes beside the images."""
    from torch.profiler import ProfilerActivity, profile, record_function

    def marked(module: torch.nn.Module, name: str) -> None:
        forward = module.forward

        def call(*args, **kwargs):
            with record_function(name):
                return forward(*args, **kwargs)

        module.forward = call

    marked(seva.net, "seva.net")
    marked(editor.pipe.unet, "editor.unet")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        run()
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    Path(images).with_suffix(".profile.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=40))


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a plumbing check, not a measurement)")
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # the worker process
    ap.add_argument("--images", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        return worker(a)
    work = Path(tempfile.mkdtemp(prefix="speed-modes-"))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keep carried packages importable
    env = {**os.environ, "PYTHONPATH": path, "COUPLED_EDIT_CACHE": str(work / "cache")}
    rows: list[dict] = []
    failed: list[dict] = []
    for mode in a.modes.split(","):
        images = work / f"{mode}.npy"
        cmd = [sys.executable, __file__, "--mode", mode, "--images", str(images), "--device", a.device, "--views", str(a.views),
               "--size", str(a.size), "--steps", str(a.steps)] + (["--tiny"] if a.tiny else [])  # fmt: skip
        # every mode gets an empty inductor folder: only compile-warm's loaded artefacts can spare it compiling
        r = subprocess.run(cmd, env=env | {"TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{mode}")}, capture_output=True, text=True)
        if r.returncode != 0:  # keep the other modes' rows: one broken mode must not cost a whole GPU call
            failed.append({"mode": mode, "stderr": r.stderr[-4000:]})
            print(f"mode {mode} failed:\n{r.stderr[-4000:]}", file=sys.stderr, flush=True)
            continue
        row = json.loads(r.stdout.strip().splitlines()[-1])
        ref = np.load(work / f"{rows[0]['mode'] if rows else mode}.npy")
        got = np.load(images)
        row["error_vs_reference"] = rel_error(got, ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(a, rows, failed)  # after every mode, so a call that runs out of time still returns what it measured
        if (table := images.with_suffix(".profile.txt")).exists() and a.out:
            Path(a.out).with_suffix(".profile.txt").write_text(table.read_text())
    if not rows:
        raise SystemExit("every mode failed")
    if (work / "fp32.npy").exists():
        fp32 = np.load(work / "fp32.npy")
        for r in rows:
            r["error_vs_fp32"] = rel_error(np.load(work / f"{r['mode']}.npy"), fp32)
    write(a, rows, failed)
    dev = device_name(a)
    ref_name = "bf16 eager" if a.device == "cuda" else "fp32 eager"
    print(f"\n{dev}, {a.views} views, {a.size}², {a.steps} steps{' (TINY models)' if a.tiny else ''}; error: relative L2 vs {ref_name}")
    vs32 = "error_vs_fp32" in rows[0]
    print("| mode | s/step | total s | warm-up s (2 steps) | peak GiB | error vs reference |" + (" error vs fp32 |" if vs32 else ""))
    print("|---|---|---|---|---|---|" + ("---|" if vs32 else ""))
    for r in rows:
        cells = [r["mode"], f"{r['s_per_step']:.3f}", f"{r['total_s']:.2f}", f"{r['warmup_s']:.1f}", f"{r['peak_gib']:.2f}"]
        cells += [f"{r['error_vs_reference']:.2e}"] + ([f"{r['error_vs_fp32']:.2e}"] if vs32 else [])
        print("| " + " | ".join(cells) + " |")
    for f in failed:
        print(f"| {f['mode']} | failed (stderr in the JSON) |")
    if failed:
        raise SystemExit(f"{len(failed)} mode(s) failed: {', '.join(f['mode'] for f in failed)}")


def device_name(a: argparse.Namespace) -> str:
    return torch.cuda.get_device_name() if a.device == "cuda" else "cpu"


def write(a: argparse.Namespace, rows: list[dict], failed: list[dict]) -> None:
    if not a.out:
        return
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device_name(a), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "tiny": a.tiny,
            "views": a.views, "size": a.size, "steps": a.steps, "commit": os.environ.get("COUPLED_EDIT_COMMIT", "")}  # fmt: skip
    Path(a.out).write_text(json.dumps({"settings": meta, "rows": rows, "failed": failed}, indent=1) + "\n")


if __name__ == "__main__":
    main()
